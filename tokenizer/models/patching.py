"""Folding pixel patches into channels before the encoder, and back after the decoder (Cosmos-Tokenizer).

``patch(x, p, method)`` maps ``[B, C, H, W]`` to ``[B, C * p^2, H/p, W/p]``; ``unpatch`` is its exact inverse.
``p`` is a power of two. Two methods:

``"haar"``: ``log2(p)`` rounds of the one-level 2-D Haar wavelet transform, each applied to every channel.
One round takes each 2x2 block ``[[a, b], [c, d]]`` (``a = x[2i, 2j]``, ``b = x[2i, 2j+1]``,
``c = x[2i+1, 2j]``, ``d = x[2i+1, 2j+1]``) to four sub-bands, low/high pass along W then along H::

    LL = (a + b + c + d) / 4      LH = (a + b - c - d) / 4
    HL = (a - b + c - d) / 4      HH = (a - b - c + d) / 4

concatenated along channels as ``[LL, LH, HL, HH]`` (sub-band major, so after round ``r`` channel
``k * C_r + c`` holds sub-band ``k`` of channel ``c``). LL is the block mean. The inverse of a round is
``a = LL + LH + HL + HH``, ``b = LL + LH - HL - HH``, ``c = LL - LH + HL - HH``, ``d = LL - LH - HL + HH``.
This is the orthonormal Haar filter bank (taps ``[s, s]`` and ``[s, -s]``, ``s = 1/sqrt(2)``) with the
result halved, as Cosmos-Tokenizer's ``Patcher``/``UnPatcher`` compute it.

``"rearrange"``: pixel unshuffle, ``[B, C, (h p1), (w p2)] -> [B, (C p1 p2), h, w]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH_METHODS = ("haar", "rearrange")


def _check(x: torch.Tensor, patch_size: int, method: str) -> None:
    if method not in PATCH_METHODS:
        raise ValueError(f"patch_method must be one of {PATCH_METHODS}, got {method!r}")
    if patch_size < 1 or patch_size & (patch_size - 1):
        raise ValueError(f"patch_size must be a power of two >= 1, got {patch_size}")
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")


def patch(x: torch.Tensor, patch_size: int, method: str = "haar") -> torch.Tensor:
    """``[B, C, H, W] -> [B, C * p^2, H/p, W/p]`` (``H``, ``W`` multiples of ``p = patch_size``)."""
    _check(x, patch_size, method)
    if x.shape[-2] % patch_size or x.shape[-1] % patch_size:
        raise ValueError(f"height and width must be multiples of patch_size={patch_size}, got {tuple(x.shape)}")
    if method == "rearrange":
        return F.pixel_unshuffle(x, patch_size)
    for _ in range(patch_size.bit_length() - 1):
        b, c, h, w = x.shape
        blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)
        top, bottom = blocks[:, :, :, 0], blocks[:, :, :, 1]  # rows 2i and 2i+1: [B, C, h/2, w/2, 2]
        low_top, high_top = top[..., 0] + top[..., 1], top[..., 0] - top[..., 1]  # a + b, a - b
        low_bottom, high_bottom = bottom[..., 0] + bottom[..., 1], bottom[..., 0] - bottom[..., 1]  # c + d, c - d
        bands = (low_top + low_bottom, low_top - low_bottom, high_top + high_bottom, high_top - high_bottom)
        x = torch.cat(bands, dim=1) / 4
    return x


def unpatch(x: torch.Tensor, patch_size: int, method: str = "haar") -> torch.Tensor:
    """``[B, C * p^2, h, w] -> [B, C, h * p, w * p]``, the inverse of ``patch``."""
    _check(x, patch_size, method)
    if x.shape[1] % (patch_size * patch_size):
        raise ValueError(f"channels must be a multiple of patch_size^2={patch_size**2}, got {tuple(x.shape)}")
    if method == "rearrange":
        return F.pixel_shuffle(x, patch_size)
    for _ in range(patch_size.bit_length() - 1):
        b, c4, h, w = x.shape
        ll, lh, hl, hh = x.chunk(4, dim=1)
        low_top, low_bottom, high_top, high_bottom = ll + lh, ll - lh, hl + hh, hl - hh
        top = torch.stack((low_top + high_top, low_top - high_top), dim=-1)  # a, b: [B, C, h, w, 2]
        bottom = torch.stack((low_bottom + high_bottom, low_bottom - high_bottom), dim=-1)  # c, d
        x = torch.stack((top, bottom), dim=3).reshape(b, c4 // 4, 2 * h, 2 * w)  # [B, C, h, 2, w, 2]
    return x


class Patcher(nn.Module):
    """``patch`` (or ``unpatch`` with ``inverse=True``) as a module without tensors; identity for size 1."""

    def __init__(self, patch_size: int = 1, method: str = "haar", inverse: bool = False) -> None:
        super().__init__()
        self.patch_size, self.method, self.inverse = patch_size, method, inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_size == 1:
            return x
        return (unpatch if self.inverse else patch)(x, self.patch_size, self.method)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, method={self.method!r}, inverse={self.inverse}"
