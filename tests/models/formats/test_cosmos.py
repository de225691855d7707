"""Cosmos-Tokenizer DI archives through ``load_checkpoint`` against an independent re-implementation.

``_cosmos_reference.py`` re-implements Cosmos' discrete image tokenizer from reading its source (not a copy)
with Cosmos' module names; the tests trace it with ``torch.jit.trace`` into real TorchScript archives laid out
as the released models are (``encoder.jit`` + ``decoder.jit``, or ``autoencoder.jit``), load the folder with
``tokenizer.models.formats.load_checkpoint`` and compare our encode/decode with the archives' own
(``torch.jit.load`` of the archives just written): identical indices, decode within fp32 tolerance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.models.formats._cosmos_reference import RefDiscreteImageTokenizer, randomize_
from tokenizer.models.formats import inspect_checkpoint, load_checkpoint
from tokenizer.quantizers import FSQConfig

LEVELS = (8, 8, 8, 5, 5, 5)  # the released DI models' FSQ levels
CH_MULT = (1, 2, 2)  # three levels, as the released (2, 4, 4), at a tiny width
RESOLUTION, PATCH = 64, 4


def _write_archives(folder: Path, model: RefDiscreteImageTokenizer, autoencoder: bool = True) -> None:
    """``encoder.jit``, ``decoder.jit`` (and ``autoencoder.jit``) in ``folder``, traced on a 16x16 image."""
    folder.mkdir(parents=True)
    example = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        encoder = torch.jit.trace(model.encoder_jit(), example, check_trace=False)
        torch.jit.save(encoder, str(folder / "encoder.jit"))
        decoder = torch.jit.trace(model.decoder_jit(), encoder(example)[0], check_trace=False)
        torch.jit.save(decoder, str(folder / "decoder.jit"))
        if autoencoder:
            torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(folder / "autoencoder.jit"))


def _reference(compression: int, attn_resolutions: tuple[int, ...] = (), seed: int = 0) -> RefDiscreteImageTokenizer:
    model = RefDiscreteImageTokenizer(
        channels=32, channels_mult=CH_MULT, num_res_blocks=1, z_channels=16, levels=LEVELS, patch_size=PATCH,
        spatial_compression=compression, attn_resolutions=attn_resolutions, resolution=RESOLUTION,
    )  # fmt: skip
    return randomize_(model, seed)


# DI8x8-like: one resampling level of three (fewer than ch_mult implies); DI16x16-like: two, with attention at
# level 1 (working resolution 64 / 4 / 2 = 8 in both encoder and decoder).
CASES = {8: (), 16: (8,)}


@pytest.fixture(scope="module", params=sorted(CASES))
def archives(request, tmp_path_factory) -> tuple[int, Path]:
    compression = request.param
    folder = tmp_path_factory.mktemp(f"cosmos-di{compression}")
    _write_archives(folder / "all", _reference(compression, CASES[compression]))
    pair, alone = folder / "pair", folder / "alone"
    pair.mkdir()
    alone.mkdir()
    for name in ("encoder.jit", "decoder.jit"):
        shutil.copy(folder / "all" / name, pair / name)
    shutil.copy(folder / "all" / "autoencoder.jit", alone / "autoencoder.jit")
    return compression, folder


def test_detect_and_infer(archives) -> None:
    compression, folder = archives
    found = inspect_checkpoint(folder / "pair")
    assert found.family == "cosmos"
    config = found.config
    assert config.downsample_factor == compression and config.patch_size == PATCH and config.patch_method == "haar"
    assert config.num_resamples == (1 if compression == 8 else None)  # None: every level but the last
    assert config.ch == 32 and config.ch_mult == CH_MULT and config.num_res_blocks == 1 and config.z_channels == 16
    assert config.quantizer == FSQConfig(levels=LEVELS) and config.embed_dim == len(LEVELS)
    assert config.attention_levels == ((1,) if CASES[compression] else ())
    assert inspect_checkpoint(folder / "alone").config == config
    assert inspect_checkpoint(folder / "all").config == config


@pytest.mark.parametrize("layout", ["pair", "alone"])
def test_encode_decode_match_the_archives(archives, layout: str) -> None:
    compression, folder = archives
    tok = load_checkpoint(folder / layout)
    encoder = torch.jit.load(str(folder / "all" / "encoder.jit"))
    decoder = torch.jit.load(str(folder / "all" / "decoder.jit"))
    pixels = torch.rand(2, 3, 2 * compression, 3 * compression, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        indices, codes, _ = encoder(pixels)
        expected = decoder(indices)
        ours = tok.encode(pixels)
        assert ours.shape == (2, 2, 3) and indices.shape == (2, 2, 3)
        assert torch.equal(ours, indices.long())
        assert len(ours.unique()) > 3  # the codes vary, so the comparison means something
        torch.testing.assert_close(tok.quantize.indices_to_codes(ours), codes)
        decoded = tok.decode(ours)
        torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        reconstruction, _ = tok(pixels)
        torch.testing.assert_close(reconstruction, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_a_half_alone_is_refused(archives, tmp_path: Path) -> None:
    _, folder = archives
    shutil.copy(folder / "all" / "encoder.jit", tmp_path / "encoder.jit")
    with pytest.raises(ValueError, match="decoder.jit is missing"):
        load_checkpoint(tmp_path)


def test_encoder_and_decoder_attending_at_different_levels_is_refused(tmp_path: Path) -> None:
    # one resampling level of three: the encoder works at 16, 8, 8 and the decoder at 4, 8, 8 (levels 2, 1, 0),
    # so attention at resolution 8 sits at encoder levels 1-2 but decoder levels 0-1, which our config cannot say
    model = _reference(8, attn_resolutions=(8,))
    assert len(model.encoder.down[2].attn) and not len(model.decoder.up[2].attn)
    _write_archives(tmp_path / "di", model, autoencoder=False)
    with pytest.raises(ValueError, match="attend at different levels"):
        load_checkpoint(tmp_path / "di")
