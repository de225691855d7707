"""Patch discriminators: output shapes (checked against the conv size formula), norms, initialisation, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tokenizer.losses import DISC_NORMS, PatchDiscriminator, PatchDiscriminator3D


def conv_out(size: int, strides: list[int]) -> int:
    for s in strides:
        size = (size + 2 * 1 - 4) // s + 1
    return size


@pytest.mark.parametrize("norm", DISC_NORMS)
@pytest.mark.parametrize(("n_layers", "hw"), [(3, (32, 32)), (1, (17, 9)), (2, (23, 40))])
def test_2d_shapes(norm, n_layers, hw):
    disc = PatchDiscriminator(in_channels=3, width=8, n_layers=n_layers, norm=norm)
    logits = disc(torch.randn(2, 3, *hw))
    strides = [2] * n_layers + [1, 1]
    assert logits.shape == (2, 1, conv_out(hw[0], strides), conv_out(hw[1], strides))


def test_2d_default_is_taming_layout():
    disc = PatchDiscriminator()
    convs = [m for m in disc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)
    ]  # fmt: skip
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.modules()) == 3
    assert disc(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("norm", DISC_NORMS)
@pytest.mark.parametrize("time_stride", [1, 2])
def test_3d_shapes(norm, time_stride):
    disc = PatchDiscriminator3D(in_channels=3, width=4, n_layers=2, norm=norm, time_stride=time_stride)
    t, h, w = (9, 16, 20) if time_stride == 1 else (13, 16, 20)
    logits = disc(torch.randn(2, 3, t, h, w))
    time = conv_out(t, [time_stride] * 2 + [1, 1])
    space = [2] * 2 + [1, 1]
    assert logits.shape == (2, 1, time, conv_out(h, space), conv_out(w, space))
    assert all(isinstance(m, nn.Conv3d) for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


def test_init_statistics():
    disc = PatchDiscriminator(norm="batch")
    conv = disc.layers[2]  # the 64 -> 128 strided conv
    assert abs(conv.weight.std().item() - 0.02) < 0.001 and abs(conv.weight.mean().item()) < 0.001
    norm_weights = torch.cat([m.weight for m in disc.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(norm_weights.mean().item() - 1.0) < 0.005 and 0.015 < norm_weights.std().item() < 0.025
    biases = [m.bias for m in disc.modules() if getattr(m, "bias", None) is not None]
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    group = PatchDiscriminator3D(norm="group", width=8)
    assert [m.num_groups for m in group.modules() if isinstance(m, nn.GroupNorm)] == [16, 32, 32]


def test_errors():
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(norm="layer")
    with pytest.raises(ValueError, match="n_layers"):
        PatchDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="time_stride"):
        PatchDiscriminator3D(time_stride=3)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        PatchDiscriminator3D(width=4)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="needs >= 6"):
        PatchDiscriminator3D(width=4)(torch.randn(1, 3, 5, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(width=4)(torch.randn(1, 3, 8, 64))
