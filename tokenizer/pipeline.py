"""Dataset tokenization: folders of images -> token shards, resumable, crash-safe, split over torchrun ranks.

The sorted input list is cut into fixed chunks of ``shard_size`` files; chunk ``k`` becomes
``tokens-0000k.safetensors`` with its manifest and error rows in ``parts/``. Rank ``r`` of ``W`` takes the
chunks ``k = r, r + W, ...``. A chunk is committed by renaming its shard into place after its part files,
so after a crash (SIGKILL included) a rerun redoes only the chunks without a shard and ends with the same
bytes as an uninterrupted run. When every chunk is done, one process joins the parts into ``manifest.jsonl``
and ``errors.jsonl``. ``run.json`` pins the tokenizer identity, the preprocessing and the input list: an
output folder made with other ones is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ._atomic import write_text_atomically
from ._distributed import barrier, default_device, init_from_environment
from .data.items import InputItem, InputReader, VideoSampling, crop_to_factor
from .data.preprocess import ImagePreprocess
from .data.video import VideoReadError, iter_windows
from .models import Tokenizer, VideoTokenizer
from .tokens import IMAGE as IMAGE_KIND
from .tokens import VIDEO as VIDEO_KIND
from .tokens import list_shards, shard_name, write_shard

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
PARTS_DIR = "parts"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class OutputMismatchError(ValueError):
    """The output folder holds tokens made by another tokenizer, other settings or other inputs."""


class StrictModeError(RuntimeError):
    """``--strict``: an input could not be tokenized."""


@dataclass
class EncodeSummary:
    items: int = 0  # tokenized in this run
    tokens: int = 0
    errors: int = 0
    shards_written: int = 0
    shards_skipped: int = 0  # already done by an earlier run
    seconds: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.items / self.seconds if self.seconds > 0 else 0.0
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items()))
        return (
            f"tokenized {self.items} items ({self.tokens} tokens) into {self.shards_written} shards in "
            f"{self.seconds:.1f} s ({rate:.1f} items/s); {self.shards_skipped} shards were already done; "
            f"{self.errors} errors" + (f" ({kinds}; see errors.jsonl)" if self.errors else "")
        )


def tokenizer_identity(model: Tokenizer) -> dict[str, Any]:
    """What makes tokens comparable: architecture and weights hashes, vocabulary, quantizer, factors."""
    config = model.config.to_dict()
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    quantizer = config["quantizer"]
    return {
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "weights_sha256": weights.hexdigest(),
        "vocabulary": model.codebook_size,
        "quantizer": quantizer.get("kind"),
        "levels": quantizer.get("levels"),
        "depth": quantizer.get("depth", 1),
        # time, height, width; a video grid of t token frames covers 1 + (t - 1) * temporal factor frames
        "downsample": [getattr(model, "temporal_factor", 1), model.downsample_factor, model.downsample_factor],
    }


def _identity_collate(item: InputItem) -> InputItem:
    return item


# -- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    preprocess: ImagePreprocess
    video: VideoSampling = field(default_factory=VideoSampling)  # which frames of each video (video models)
    shard_size: int = 1000  # input files per shard
    batch_size: int = 16
    workers: int = 0
    device: str | None = None  # None: this rank's GPU, else the CPU
    dtype: str = "fp32"  # autocast dtype of the encoder ("fp32" disables autocast); quantization stays fp32
    strict: bool = False  # stop at the first input that cannot be tokenized
    progress: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("shard_size", 1), ("batch_size", 1), ("workers", 0)):
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


def encode_dataset(
    inputs: Sequence[Path], model: Tokenizer, out_dir: str | Path, options: EncodeOptions
) -> EncodeSummary:
    """Tokenize ``inputs`` (sorted file paths) into token shards under ``out_dir``; see the module docstring.

    Under torchrun (``WORLD_SIZE`` > 1) each rank takes its chunks and rank 0 writes the manifest after a
    barrier. Returns this rank's summary. Raises ``OutputMismatchError`` for a folder made differently and
    ``StrictModeError`` with ``strict`` at the first bad input.
    """
    started = time.perf_counter()
    world, rank, local_rank = init_from_environment()
    device = torch.device(options.device) if options.device else default_device(local_rank)
    out_dir = Path(out_dir)
    model = model.to(device).eval()
    _check_video_options(model, options.video)
    identity = tokenizer_identity(model)  # hashes the weights: once per run
    run = {
        "format": "tessera-tokens",
        "tokenizer": identity,
        "preprocess": asdict(options.preprocess),
        "video": asdict(options.video),
        "shard_size": options.shard_size,
        "inputs": len(inputs),
        "inputs_sha256": hashlib.sha256("\n".join(map(str, inputs)).encode()).hexdigest(),
    }
    if rank == 0:
        _claim_output(out_dir, run, clean=True)
    barrier()
    if rank != 0:
        _claim_output(out_dir, run, clean=False)

    chunks = [inputs[i : i + options.shard_size] for i in range(0, len(inputs), options.shard_size)]
    mine = list(range(rank, len(chunks), world))
    done = {p.name for p in list_shards(out_dir)}
    summary = EncodeSummary()
    pending = [k for k in mine if shard_name(k) not in done]
    summary.shards_skipped = len(mine) - len(pending)
    total = sum(len(chunks[k]) for k in pending)
    with tqdm(total=total, unit="item", desc=f"encode[{rank}]" if world > 1 else "encode",
              disable=not options.progress, dynamic_ncols=True) as bar:  # fmt: skip
        for k in pending:
            _encode_chunk(k, chunks[k], model, identity, out_dir, options, device, summary, bar)
    barrier()
    if rank == 0:
        _join_parts(out_dir, len(chunks))
    summary.seconds = time.perf_counter() - started
    return summary


def _encode_chunk(
    index: int,
    paths: Sequence[Path],
    model: Tokenizer,
    identity: dict[str, Any],
    out_dir: Path,
    options: EncodeOptions,
    device: torch.device,
    summary: EncodeSummary,
    bar: tqdm,
) -> None:
    reader = InputReader(list(paths), options.preprocess, options.video, videos=isinstance(model, VideoTokenizer))
    loader = DataLoader(
        reader,
        batch_size=None,
        collate_fn=_identity_collate,
        num_workers=options.workers,
    )
    grids: dict[int, torch.Tensor] = {}
    records: dict[int, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    buckets: dict[tuple[int, ...], list[InputItem]] = {}
    for item in loader:
        bar.update(1)
        if item.stream_video:
            try:
                grids[item.position] = _encode_video_stream(model, Path(item.source), options, item.record, device)
                records[item.position] = {"source": item.source, **item.record}
                continue
            except VideoReadError as err:
                item.record = {"kind": "unreadable", "error": str(err)}
        if item.pixels is None:
            errors.append({"source": item.source, **item.record})
            summary.error_kinds[item.record["kind"]] = summary.error_kinds.get(item.record["kind"], 0) + 1
            log.warning("skipped %s", item.record["error"])
            if options.strict:
                raise StrictModeError(item.record["error"])
            continue
        records[item.position] = {"source": item.source, **item.record}
        bucket = buckets.setdefault(tuple(item.pixels.shape), [])
        bucket.append(item)
        if len(bucket) == options.batch_size:
            grids.update(_encode_batch(model, buckets.pop(tuple(item.pixels.shape)), device, options.dtype))
    for shape in sorted(buckets, key=lambda s: buckets[s][0].position):
        grids.update(_encode_batch(model, buckets[shape], device, options.dtype))

    name = shard_name(index)
    order = sorted(grids)
    manifest = [
        {**records[p], "shard": name, "position": i, "shape": list(grids[p].shape)} for i, p in enumerate(order)
    ]
    kinds = [VIDEO_KIND if records[p]["kind"] == "video" else IMAGE_KIND for p in order]
    parts = out_dir / PARTS_DIR
    _write_lines(parts / f"manifest-{index:05d}.jsonl", manifest)
    _write_lines(parts / f"errors-{index:05d}.jsonl", errors)
    write_shard(out_dir / name, [grids[p] for p in order], kinds, identity)
    summary.items += len(order)
    summary.tokens += sum(int(grids[p].numel()) for p in order)
    summary.errors += len(errors)
    summary.shards_written += 1


@torch.no_grad()
def _encode_batch(
    model: Tokenizer, items: list[InputItem], device: torch.device, dtype: str
) -> dict[int, torch.Tensor]:
    pixels = torch.stack([item.pixels for item in items]).to(device)
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    with autocast:
        indices = model.encode(pixels).cpu()
    return {item.position: grid for item, grid in zip(items, indices)}


def _check_video_options(model: Tokenizer, sampling: VideoSampling) -> None:
    if not isinstance(model, VideoTokenizer):
        return
    tf = model.temporal_factor
    if sampling.clip_frames is not None and (sampling.clip_frames - 1) % tf:
        raise ValueError(f"clip_frames must be 1 + k * {tf} for this model (1, {1 + tf}, {1 + 2 * tf}, ...), "
                         f"got {sampling.clip_frames}")  # fmt: skip
    if sampling.clip_frames is None and sampling.fps is not None:
        raise ValueError("fps resampling applies to clips (set clip_frames); whole videos use stride")


@torch.no_grad()
def _encode_video_stream(
    model: VideoTokenizer, path: Path, options: EncodeOptions, record: dict[str, Any], device: torch.device
) -> torch.Tensor:
    """Tokenize a whole video window by window (memory bounded by the window); adds the window layout,
    the frames tokenized and the trailing frames dropped (fewer than one token frame) to ``record``."""
    tf = model.temporal_factor
    later = max(tf, options.video.window // tf * tf)
    first = 1 + later
    preprocess, sampling = options.preprocess, options.video
    windows = iter_windows(
        path, first, later, start=sampling.start, stride=sampling.stride, resize=preprocess.resize,
        size=preprocess.size, crop=preprocess.crop, seed=int(record["sha256"][:16], 16),
    )  # fmt: skip
    layout: list[int] = []
    dropped = 0

    def trimmed() -> Iterator[torch.Tensor]:
        nonlocal dropped
        for window in windows:
            frames = window.shape[1]
            keep = 1 + (frames - 1) // tf * tf if not layout else frames // tf * tf
            dropped += frames - keep
            if keep == 0:
                continue
            layout.append(keep)
            yield crop_to_factor(window[:, :keep], preprocess.factor)[None].to(device)

    autocast = torch.autocast(device.type, dtype=DTYPES[options.dtype], enabled=options.dtype != "fp32")
    with autocast:
        parts = [tokens.cpu() for tokens in model.encode_windows(trimmed())]
    if not parts:
        raise VideoReadError(f"{str(path)!r}: no frames could be read")
    record.update(frames=sum(layout), frames_dropped=dropped, windows=layout)
    return torch.cat(parts, dim=1)[0]


# -- files ------------------------------------------------------------------------------------------


def _claim_output(out_dir: Path, run: dict[str, Any], clean: bool) -> None:
    """Create ``out_dir`` with ``run.json``, or check that the one there describes this run.

    With ``clean`` (one process, before the others start), temporary files a killed run left are removed.
    """
    for folder in (out_dir, out_dir / PARTS_DIR) if clean else ():
        for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
            stale.unlink(missing_ok=True)
    path = out_dir / RUN_FILE
    if path.is_file():
        existing = json.loads(path.read_text())
        differing = [key for key in run if existing.get(key) != json.loads(json.dumps(run[key]))]
        if differing:
            what = {"tokenizer": "a different tokenizer", "preprocess": "different preprocessing settings"}
            reasons = sorted({what.get(key, "a different input list or shard size") for key in differing})
            raise OutputMismatchError(
                f"{out_dir} holds tokens made with {' and '.join(reasons)} (differs in: {', '.join(differing)}); "
                "use another --out folder, or delete this one to start over"
            )
        return
    if out_dir.is_dir() and (list_shards(out_dir) or (out_dir / "manifest.jsonl").exists()):
        raise OutputMismatchError(f"{out_dir} holds token shards without {RUN_FILE}; use another --out folder")
    write_text_atomically(path, json.dumps(run, indent=2, sort_keys=True) + "\n")


def _join_parts(out_dir: Path, chunks: int) -> None:
    """Concatenate the per-chunk parts, in chunk order, into manifest.jsonl and errors.jsonl."""
    parts = out_dir / PARTS_DIR
    for kind in ("manifest", "errors"):
        text = "".join((parts / f"{kind}-{k:05d}.jsonl").read_text() for k in range(chunks))
        write_text_atomically(out_dir / f"{kind}.jsonl", text)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomically(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
