"""Pretrained-checkpoint families: our ``Tokenizer`` loaded from a peer's checkpoint vs the peer's own code on
the same weights, encode and decode side by side.

Families, at the released models' sizes (random weights; nothing is downloaded):

- ``taming``: taming-transformers' ImageNet f16 VQGAN (ch 128, ch_mult 1,1,2,2,4, 2 res blocks, attention at
  resolution 16, z_channels 256, 16384 x 256 codebook). Peer: the installed ``taming-transformers-rom1504``
  package's ``Encoder``/``Decoder``/``VectorQuantizer2`` composed as its ``VQModel`` (``PeerVQModel`` from
  ``tests/models/formats/test_taming_peer.py``; taming's ``vqgan.py`` needs pytorch_lightning). Ours:
  ``load_checkpoint`` of the Lightning-style ``.ckpt``.
- ``llamagen``: LlamaGen's VQ-16 (ch 128, ch_mult 1,1,2,2,4, z_channels 256, 16384 x 8 l2-normalised codebook).
  LlamaGen is not on PyPI, so the peer is **our reference re-implementation of LlamaGen's vq_model.py** (the
  functional one in ``tests/models/formats/test_llamagen.py``), **not LlamaGen's own code**.
- ``diffusers``: diffusers' ``VQModel`` in latent-diffusion's vq-f4 shape (block_out_channels 128,256,512,
  layers_per_block 2, latent_channels 3, 8192 x 3 codebook). Peer: ``VQModel.encode`` + ``.quantize`` and
  ``quantize.get_codebook_entry`` + ``.decode``. Ours: ``load_checkpoint`` of its ``save_pretrained`` folder.

Before timing, our indices must equal the peer's on the benchmark input, so both sides run the same
computation. Both run fp32 under ``torch.no_grad`` in one process (same thread count). Timing is warm (one
untimed call first; model construction and loading excluded); peak memory is measured on a separate call
(``_measure.peak_memory_bytes``).

    python -m pytest benchmarks/bench_pretrained.py           # 1 image at 128x128 (BENCH_FULL=1: 2 at 256x256)
    python benchmarks/bench_pretrained.py [--batch 2] [--size 256] [--repeats 5] [--families taming,llamagen,diffusers]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # the repository root: the peers' code lives in tests/

from _measure import bench_device, machine_lines, median, peak_memory_bytes, time_call

from tokenizer.models.formats import load_checkpoint

OPS = ("encode", "decode")
IMPLS = ("ours", "peer")
# family -> module whose absence means the peer cannot run, and how to install it
PEER_PACKAGES = {
    "taming": ("taming.modules.vqvae.quantize", "pip install --no-deps taming-transformers-rom1504"),
    "llamagen": (None, ""),
    "diffusers": ("diffusers", "pip install diffusers"),
}


@dataclass
class Pair:
    """One family's four calls on one batch: ``calls[op][impl]``, and what the peer is."""

    family: str
    peer: str
    calls: dict[str, dict[str, Callable[[], torch.Tensor]]]


def _no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def call() -> torch.Tensor:
        with torch.no_grad():
            return fn()

    return call


def _pair(family: str, peer: str, model, pixels: torch.Tensor, peer_encode, peer_decode) -> Pair:
    """Check that ours and the peer give identical indices on ``pixels``, then bind the four calls."""
    with torch.no_grad():
        ours_ids, peer_ids = model.encode(pixels), peer_encode(pixels)
    if not torch.equal(ours_ids, peer_ids):
        differ = (ours_ids != peer_ids).float().mean().item()
        raise AssertionError(f"{family}: our indices differ from the peer's at {differ:.2%} of positions")
    assert peer_ids.unique().numel() > 1, f"{family}: every position took one code; the comparison is degenerate"
    calls = {
        "encode": {"ours": lambda: model.encode(pixels), "peer": lambda: peer_encode(pixels)},
        "decode": {"ours": lambda: model.decode(peer_ids), "peer": lambda: peer_decode(peer_ids)},
    }
    return Pair(family, peer, {op: {i: _no_grad(f) for i, f in impls.items()} for op, impls in calls.items()})


def _pixels(batch: int, size: int, device: torch.device) -> torch.Tensor:
    return (torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)


# --------------------------------------------------------------------------------------------- families


def taming_pair(batch: int, size: int, device: torch.device, directory: Path) -> Pair:
    """taming's f16 ImageNet VQGAN: its own modules vs ours from a Lightning ``.ckpt``."""
    from tests.models.formats.test_taming_peer import PeerVQModel, _lightning_checkpoint, _randomize

    ddconfig = {
        "double_z": False,
        "z_channels": 256,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.0,
    }
    torch.manual_seed(0)
    peer = PeerVQModel(ddconfig, n_embed=16384, embed_dim=256).eval()
    _randomize(peer, seed=0)
    path = directory / "taming-f16.ckpt"
    _lightning_checkpoint(peer, path, seed=0)
    model = load_checkpoint(path).to(device)
    peer = peer.to(device)
    version = importlib.metadata.version("taming-transformers-rom1504")
    return _pair(
        "taming",
        f"taming-transformers-rom1504 {version} (Encoder, Decoder, VectorQuantizer2)",
        model,
        _pixels(batch, size, device),
        lambda x: peer.indices(peer.encode_to_prequant(x)),
        peer.decode_indices,
    )


def llamagen_pair(batch: int, size: int, device: torch.device, directory: Path) -> Pair:
    """LlamaGen VQ-16 vs our reference re-implementation of LlamaGen's vq_model.py (tests/models/formats)."""
    from tests.models.formats import test_llamagen as reference

    real_size = {"CH": 128, "Z_CHANNELS": 256, "N_EMBED": 16384, "EMBED_DIM": 8}
    with mock.patch.multiple(reference, **real_size):  # the builder reads the test's module-level sizes
        sd = reference._llamagen_state_dict((1, 1, 2, 2, 4), 2, seed=0)
    path = directory / "vq_ds16_c2i.pt"
    torch.save({"model": sd}, path)
    model = load_checkpoint(path).to(device)
    sd = {name: t.to(device) for name, t in sd.items()}

    def peer_encode(x: torch.Tensor) -> torch.Tensor:
        # LlamaGen's VectorQuantizer (l2_norm): normalise latents and codebook, full distance matrix, argmin
        z = reference._reference_latents(sd, x)
        b, d, h, w = z.shape
        rows = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), dim=1)
        codebook = F.normalize(sd["quantize.embedding.weight"], dim=1)
        distances = rows.square().sum(1, keepdim=True) + codebook.square().sum(1) - 2 * rows @ codebook.T
        return distances.argmin(dim=1).reshape(b, h, w)

    def peer_decode(indices: torch.Tensor) -> torch.Tensor:
        # LlamaGen's decode_code: the normalised codebook row, then post_quant_conv + decoder
        codes = F.normalize(sd["quantize.embedding.weight"], dim=1)[indices].permute(0, 3, 1, 2)
        return reference._reference_decode(sd, codes)

    peer = "our reference re-implementation of LlamaGen's vq_model.py (tests/models/formats/test_llamagen.py)"
    return _pair("llamagen", peer, model, _pixels(batch, size, device), peer_encode, peer_decode)


def diffusers_pair(batch: int, size: int, device: torch.device, directory: Path) -> Pair:
    """diffusers' VQModel in latent-diffusion's vq-f4 shape vs ours from its ``save_pretrained`` folder."""
    import diffusers

    torch.manual_seed(0)
    peer = diffusers.VQModel(
        block_out_channels=(128, 256, 512),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        latent_channels=3,
        num_vq_embeddings=8192,
        vq_embed_dim=3,
        sample_size=256,
    ).eval()
    with torch.no_grad():  # spread the codebook like the latents (its default init sits near 0)
        latents = peer.encode(_pixels(1, 64, torch.device("cpu"))).latents
        g = torch.Generator().manual_seed(1)
        codebook = peer.quantize.embedding.weight
        codebook.copy_(latents.mean() + latents.std() * torch.randn(codebook.shape, generator=g))
    folder = directory / "vq-f4"
    peer.save_pretrained(folder)
    model = load_checkpoint(folder).to(device)
    peer = peer.to(device)

    def peer_encode(x: torch.Tensor) -> torch.Tensor:
        h = peer.encode(x).latents
        return peer.quantize(h)[2][2].view(h.shape[0], *h.shape[2:])

    def peer_decode(indices: torch.Tensor) -> torch.Tensor:
        codes = peer.quantize.get_codebook_entry(indices.reshape(-1), (*indices.shape, peer.config.vq_embed_dim))
        return peer.decode(codes, force_not_quantize=True).sample

    version = importlib.metadata.version("diffusers")
    return _pair(
        "diffusers", f"diffusers {version} VQModel", model, _pixels(batch, size, device), peer_encode, peer_decode
    )


FAMILIES = {"taming": taming_pair, "llamagen": llamagen_pair, "diffusers": diffusers_pair}


def peer_missing(family: str) -> str | None:
    """The install command when ``family``'s peer package is absent, else ``None``."""
    module, install = PEER_PACKAGES[family]
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else install


def build(family: str, batch: int, size: int, device: torch.device) -> Pair:
    """``family``'s pair on a ``batch x 3 x size x size`` input (checkpoints written to a temporary folder)."""
    with tempfile.TemporaryDirectory() as directory:
        return FAMILIES[family](batch, size, device, Path(directory))


# --------------------------------------------------------------------------------------------- pytest


def _grid() -> tuple[int, int]:
    from conftest import FULL

    return (2, 256) if FULL else (1, 128)


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request) -> Pair:
    module, _ = PEER_PACKAGES[request.param]
    if module is not None:
        pytest.importorskip(module, reason=f"{PEER_PACKAGES[request.param][1]} to compare")
    batch, size = _grid()
    return build(request.param, batch, size, bench_device())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", OPS)
def test_pretrained_vs_peer(benchmark, pair, op, impl):
    from conftest import run

    batch, size = _grid()
    device = bench_device()
    benchmark.group = f"{pair.family} {op} {batch}x3x{size}x{size}"
    rounds = 2 if device.type == "cpu" else 10
    run(benchmark, pair.calls[op][impl], device, rounds=rounds, family=pair.family, impl=impl, peer=pair.peer)


# --------------------------------------------------------------------------------------------- script


@dataclass
class Row:
    family: str
    op: str
    seconds: dict[str, list[float]]
    peak_mib: dict[str, float | None]


def measure_pair(pair: Pair, device: torch.device, repeats: int) -> list[Row]:
    """Per op: one warm-up call each, one memory call each, then ``repeats`` timed calls interleaved
    (ours, peer, peer, ours, ... so neither side always runs first)."""
    rows = []
    for op in OPS:
        calls = pair.calls[op]
        for fn in calls.values():
            fn()
        peaks = {}
        for impl, fn in calls.items():
            _, peak = peak_memory_bytes(fn, device)
            peaks[impl] = None if peak is None else peak / 2**20
        seconds: dict[str, list[float]] = {impl: [] for impl in calls}
        for r in range(repeats):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                seconds[impl].append(time_call(calls[impl], device))
        rows.append(Row(pair.family, op, seconds, peaks))
    return rows


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(rows: list[Row]) -> list[str]:
    columns = ["family", "op", "ours min / median s", "peer min / median s", "ratio min / median"]
    columns += ["ours peak MiB", "peer peak MiB", "ratio"]
    lines = ["| " + " | ".join(columns) + " |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        best = {impl: min(s) for impl, s in row.seconds.items()}
        mid = {impl: median(s) for impl, s in row.seconds.items()}
        peak = row.peak_mib
        mib = {impl: "n/a" if peak[impl] is None else f"{peak[impl]:.0f}" for impl in IMPLS}
        lines.append(
            f"| {row.family} | {row.op} | {best['ours']:.3f} / {mid['ours']:.3f} | {best['peer']:.3f} / "
            f"{mid['peer']:.3f} | {_ratio(best['ours'], best['peer'])} / {_ratio(mid['ours'], mid['peer'])} | "
            f"{mib['ours']} | {mib['peer']} | {_ratio(peak['ours'], peak['peer'])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="image height and width (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated subset of: " + ", ".join(FAMILIES)
    )
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {unknown}; choose from {list(FAMILIES)}")
    device = bench_device()

    print("\n".join(machine_lines(device)))
    print(
        f"conditions: batch {args.batch} x 3 x {args.size} x {args.size}, fp32, torch.no_grad on both sides, "
        f"{args.repeats} interleaved timed repeats after one warm-up call (loading excluded), peak memory on a "
        f"separate call; load average at start {os.getloadavg()[0]:.2f}"
    )
    rows, peers = [], []
    for family in families:
        install = peer_missing(family)
        if install:
            print(f"{family}: skipped, its peer is not installed ({install})")
            continue
        pair = build(family, args.batch, args.size, device)
        peers.append(f"- {family}: peer = {pair.peer}")
        rows += measure_pair(pair, device, args.repeats)
        print("\n".join(table(rows)[-len(OPS) :]), flush=True)
        del pair
    print(f"load average at end {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(rows)))
    print("\n".join(["", "Ratios are ours / peer (below 1: ours is faster or smaller).", *peers]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
