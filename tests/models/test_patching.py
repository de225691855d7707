"""Patch folding (``tokenizer.models.patching``) and the config options that use it.

The Haar patcher is checked against Cosmos-Tokenizer's formulation re-implemented independently in
``tests/models/formats/_cosmos_reference.py`` (a 2-tap filter bank as grouped stride-2 convolutions) and
against the block-mean property of its LL band; ``rearrange`` against a reshape written here.
"""

from __future__ import annotations

import pytest
import torch

from tests.models.formats._cosmos_reference import RefPatcher, RefUnPatcher
from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.models.patching import Patcher, patch, unpatch
from tokenizer.quantizers import FSQConfig


@pytest.mark.parametrize("patch_size", [1, 2, 4, 8])
@pytest.mark.parametrize("method", ["haar", "rearrange"])
def test_round_trip(patch_size: int, method: str) -> None:
    x = torch.randn(2, 3, 8 * 3, 8 * 5, dtype=torch.float64)  # non-square
    folded = patch(x, patch_size, method)
    assert folded.shape == (2, 3 * patch_size**2, 24 // patch_size, 40 // patch_size)
    torch.testing.assert_close(unpatch(folded, patch_size, method), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        patch(unpatch(folded, patch_size, method), patch_size, method), folded, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_haar_matches_cosmos_filter_bank(patch_size: int) -> None:
    forward, inverse = RefPatcher(patch_size), RefUnPatcher(patch_size)
    for module in (forward, inverse):  # float64 taps, so the comparison is exact up to float64 rounding
        module.wavelets = torch.full((2,), 0.5**0.5, dtype=torch.float64)
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(patch(x, patch_size), forward(x), rtol=0, atol=1e-12)
    y = torch.randn(2, 3 * patch_size**2, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(unpatch(y, patch_size), inverse(y), rtol=0, atol=1e-12)


def test_haar_low_band_is_the_block_mean() -> None:
    x = torch.randn(1, 3, 12, 20, dtype=torch.float64)
    folded = patch(x, 4)
    mean = x.reshape(1, 3, 3, 4, 5, 4).mean(dim=(3, 5))
    torch.testing.assert_close(folded[:, :3], mean)  # sub-band LL of LL: the first C channels


def test_rearrange_is_pixel_unshuffle() -> None:
    x = torch.randn(2, 3, 8, 12)
    expected = x.reshape(2, 3, 2, 4, 3, 4).permute(0, 1, 3, 5, 2, 4).reshape(2, 48, 2, 3)
    torch.testing.assert_close(patch(x, 4, "rearrange"), expected, rtol=0, atol=0)


def test_patcher_module_and_errors() -> None:
    x = torch.randn(1, 3, 8, 8)
    assert Patcher(1)(x) is x
    torch.testing.assert_close(Patcher(2, inverse=True)(Patcher(2)(x)), x)
    with pytest.raises(ValueError, match="power of two"):
        patch(x, 3)
    with pytest.raises(ValueError, match="multiples of patch_size"):
        patch(torch.randn(1, 3, 6, 8), 4)
    with pytest.raises(ValueError, match="patch_method"):
        patch(x, 2, "wavelet")


def test_config_options_round_trip_and_defaults() -> None:
    assert TokenizerConfig().downsample_factor == 16 and TokenizerConfig().resamples == 4
    config = TokenizerConfig(
        ch=32, ch_mult=(1, 2, 2), patch_size=4, num_resamples=1, attn_resolutions=(), quantizer=FSQConfig(levels=(8, 5))
    )
    assert config.downsample_factor == 8
    assert TokenizerConfig.from_dict(config.to_dict()) == config
    for bad in ({"patch_size": 3}, {"patch_method": "db2"}, {"num_resamples": 4}, {"num_resamples": -1}):
        with pytest.raises(ValueError):
            TokenizerConfig(ch=32, ch_mult=(1, 2, 2), **bad)


def test_tokenizer_with_patches_and_fewer_resamples() -> None:
    config = TokenizerConfig(
        ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8, patch_size=2,
        num_resamples=1, quantizer=FSQConfig(levels=(8, 5)),
    )  # fmt: skip
    tok = Tokenizer(config).eval()
    assert tok.encoder.conv_in.in_channels == 12 and tok.decoder.conv_out.out_channels == 12
    assert [hasattr(level, "downsample") for level in tok.encoder.down] == [True, False, False]
    assert [hasattr(level, "upsample") for level in tok.decoder.up] == [False, False, True]
    x = torch.rand(1, 3, 12, 20) * 2 - 1
    assert tok.encode(x).shape == (1, 3, 5)
    assert tok.decode(tok.encode(x)).shape == x.shape
