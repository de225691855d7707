"""Patch-GAN discriminators: the pix2pix / taming-transformers ``NLayerDiscriminator`` in 2-D, and its 3-D
counterpart for video.

Layout (``ndf = width``, kernel 4, padding 1, ``m_n = min(2**n, 8)``):
    conv(in -> ndf, stride 2) + LeakyReLU(0.2)
    for n in 1 .. n_layers-1:  conv(ndf*m_{n-1} -> ndf*m_n, stride 2) + norm + LeakyReLU(0.2)
    conv(ndf*m_{n_layers-1} -> ndf*m_{n_layers}, stride 1) + norm + LeakyReLU(0.2)
    conv(ndf*m_{n_layers} -> 1, stride 1)
Each output logit scores one overlapping patch of the input (70x70 pixels for ``n_layers=3``).

Norms: ``"batch"`` matches taming-transformers (BatchNorm; statistics over the per-GPU batch), ``"group"``
(GroupNorm, up to 32 groups) suits small per-GPU batches where batch statistics are noisy, ``"none"`` has none.
Convolutions followed by a norm carry no bias (the norm's shift replaces it). Initialisation as in taming:
conv weights ~ N(0, 0.02), biases 0, norm weights ~ N(1, 0.02), norm biases 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DISC_NORMS = ("batch", "group", "none")
_KERNEL = 4


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


def _out_size(size: int, strides: list[int]) -> int:
    for stride in strides:
        size = (size + 2 - _KERNEL) // stride + 1
    return size


def _min_size(strides: list[int]) -> int:
    return next(n for n in range(1, 1 << 16) if _out_size(n, strides) >= 1)


def min_input_size(n_layers: int, stride: int = 2) -> int:
    """The shortest input extent (pixels, or frames for a 3-D discriminator's ``time_stride``) along an axis
    whose ``n_layers`` strided convs use ``stride`` that still yields one logit: ``n_layers + 3`` for stride 1."""
    return _min_size([stride] * n_layers + [1, 1])


class _PatchDiscriminatorBase(nn.Module):
    dims: int

    def __init__(self, in_channels: int, width: int, n_layers: int, norm: str, strides: list) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels} and {width}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if norm not in DISC_NORMS:
            raise ValueError(f"norm must be one of {DISC_NORMS}, got {norm!r}")
        conv = nn.Conv2d if self.dims == 2 else nn.Conv3d
        bias = norm == "none"
        layers: list[nn.Module] = [conv(in_channels, width, _KERNEL, strides[0], 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            layers += [
                conv(width * prev, width * mult, _KERNEL, strides[n], 1, bias=bias),
                _norm(norm, width * mult, self.dims),
                nn.LeakyReLU(0.2),
            ]
        layers.append(conv(width * mult, 1, _KERNEL, 1, 1))
        self.layers = nn.Sequential(*layers)
        self._strides = [*strides, 1]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Taming's initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02), all biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
                nn.init.normal_(module.weight, 1.0, 0.02)
            else:
                continue
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _check(self, x: torch.Tensor, axes: list[int]) -> None:
        if x.ndim != self.dims + 2:
            layout = "[B, C, H, W]" if self.dims == 2 else "[B, C, T, H, W]"
            raise ValueError(f"{type(self).__name__} takes {layout}, got shape {tuple(x.shape)}")
        for axis in axes:
            strides = [s if isinstance(s, int) else s[axis] for s in self._strides]
            if _out_size(x.shape[2 + axis], strides) < 1:
                minimum = _min_size(strides)
                raise ValueError(
                    f"{type(self).__name__} input {tuple(x.shape)} is too small: dimension {2 + axis} needs "
                    f">= {minimum} for this depth and stride"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, list(range(self.dims)))
        return self.layers(x)


class PatchDiscriminator(_PatchDiscriminatorBase):
    """2-D patch-GAN discriminator (taming's ``NLayerDiscriminator``).

    Args:
        in_channels: channels of the images (3 for RGB).
        width: channels of the first conv (``ndf``).
        n_layers: number of stride-2 convs (the receptive field grows with it: 70 pixels for 3).
        norm: ``"batch"`` (as taming), ``"group"`` (small per-GPU batches) or ``"none"``.

    ``forward(x [B, C, H, W]) -> logits [B, 1, h, w]`` (``h = 30`` for ``H = 256``, ``n_layers=3``).
    """

    dims = 2

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__(in_channels, width, n_layers, norm, [2] * n_layers + [1])


class PatchDiscriminator3D(_PatchDiscriminatorBase):
    """3-D patch-GAN discriminator for video: the 2-D layout with ``Conv3d`` (kernel 4, padding 1) whose strided
    convs stride 2 in space and ``time_stride`` in time.

    Args:
        in_channels, width, n_layers, norm: as ``PatchDiscriminator``.
        time_stride: 1 or 2, the temporal stride of the strided convs. Each kernel-4 conv shortens time by at
            least one frame, so with ``n_layers=3`` a clip needs ``T >= 6`` frames with ``time_stride=1`` (the
            default: a 17-frame clip gives 12 temporal patches) and ``T >= 24`` with ``time_stride=2``.

    ``forward(x [B, C, T, H, W]) -> logits [B, 1, t, h, w]``.
    """

    dims = 3

    def __init__(
        self, in_channels: int = 3, width: int = 64, n_layers: int = 3, norm: str = "batch", time_stride: int = 1
    ) -> None:
        if time_stride not in (1, 2):
            raise ValueError(f"time_stride must be 1 or 2, got {time_stride}")
        super().__init__(in_channels, width, n_layers, norm, [(time_stride, 2, 2)] * n_layers + [1])
