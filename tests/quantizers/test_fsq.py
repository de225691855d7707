"""FSQ quantizer module: presets, grid, projections, round trip, errors."""

from __future__ import annotations

import math

import pytest
import torch

from tokenizer.quantizers import FSQ, FSQ_PRESETS, FSQConfig


@pytest.mark.parametrize("size", sorted(FSQ_PRESETS))
def test_presets_give_about_the_requested_vocabulary(size):
    fsq = FSQ(FSQConfig(codebook_size=size))
    assert fsq.levels == FSQ_PRESETS[size]
    assert 0.9 * size <= fsq.codebook_size <= 1.1 * size


@pytest.mark.parametrize("shape", [(2, 4, 5, 7), (1, 4, 3, 2, 2)], ids=str)
def test_codes_on_grid_and_round_trip(shape):
    fsq = FSQ(FSQConfig(levels=(8, 5, 5, 5)))
    x = torch.randn(*shape) * 2
    out = fsq(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (shape[0], *shape[2:])
    assert float(out.loss) == 0.0
    half_width = torch.tensor([4.0, 2.0, 2.0, 2.0]).view(1, 4, *([1] * (len(shape) - 2)))
    steps = out.quantized * half_width
    assert torch.equal(steps, steps.round())
    assert ((out.indices >= 0) & (out.indices < 1000)).all()
    assert torch.equal(fsq.indices_to_codes(out.indices), out.quantized)


def test_projection_when_channels_differ():
    fsq = FSQ(FSQConfig(levels=(8, 5, 5, 5), dim=16))
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = fsq(x)
    assert out.quantized.shape == x.shape and fsq.codebook_size == 1000
    out.quantized.sum().backward()
    assert x.grad.abs().sum() > 0
    torch.testing.assert_close(fsq.indices_to_codes(out.indices), out.quantized)


def test_straight_through_gradient():
    fsq = FSQ(FSQConfig(levels=(5, 5, 5)))
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    fsq(x).quantized.sum().backward()
    lv = torch.tensor([5.0, 5.0, 5.0]).view(1, 3, 1, 1)
    half = (lv - 1) * (1 + 1e-3) / 2
    expected = half / (lv // 2) * (1 - torch.tanh(x.detach()) ** 2)  # odd levels: no shift
    torch.testing.assert_close(x.grad, expected)


def test_autocast_keeps_fp32():
    fsq = FSQ(FSQConfig(levels=(8, 8, 8, 5, 5, 5)))
    x = torch.randn(2, 6, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(x.bfloat16())
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, fsq(x.bfloat16().float()).indices)
    assert out.indices.unique().numel() > 0.5 * min(math.prod(fsq.levels), 128)


class TestBadConfig:
    def test_levels_below_two(self):
        with pytest.raises(ValueError, match="at least 2"):
            FSQConfig(levels=(8, 1))

    def test_unknown_preset(self):
        with pytest.raises(ValueError, match="presets"):
            FSQConfig(codebook_size=1000)

    def test_channel_mismatch(self):
        with pytest.raises(ValueError, match="x has 5 channels but FSQ was built for dim=4"):
            FSQ(FSQConfig(levels=(8, 5, 5, 5)))(torch.randn(1, 5, 2, 2))
