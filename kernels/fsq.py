"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple", arXiv:2309.15505): bound each channel, round it, straight-through gradient.

Math, per channel i with L_i levels, always in fp32:

    half   = (L - 1) * (1 + 1e-3) / 2          offset = 0.5 if L is even else 0
    shift  = atanh(offset / half)               bounded = tanh(z + shift) * half - offset
    q      = round(bounded)   (half to even)    codes = q / (L // 2)   in [-1, 1]
    index  = sum_i (q_i + L_i // 2) * prod_{j<i} L_j

Gradient: straight through the rounding only, so
``d codes / d z = half / (L // 2) * (1 - tanh(z + shift)^2)``. The Triton path saves only ``z`` and
recomputes the tanh in its backward kernel; the PyTorch path saves the tanh.

Non-finite input: +-Inf saturates to the extreme level; a position with NaN in any channel gets
NaN codes and index -1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import _dispatch
from ._checks import check_float_tensor, check_levels
from .reference import fsq_bound_constants


@dataclass(frozen=True)
class FSQConstants:
    """Per-channel constants of the bound, as tensors on one device."""

    half: torch.Tensor  # fp32 [d]
    offset: torch.Tensor  # fp32 [d]
    shift: torch.Tensor  # fp32 [d]
    scale: torch.Tensor  # fp32 [d], 1 / (L // 2)
    half_width: torch.Tensor  # int64 [d], L // 2
    basis: torch.Tensor  # int64 [d], prod_{j<i} L_j


@functools.lru_cache(maxsize=64)
def fsq_constants(levels: tuple[int, ...], device: torch.device) -> FSQConstants:
    """The bound's constants for ``levels``, computed in fp32 arithmetic (``reference.fsq_bound_constants``)."""
    half, offset, shift = (t.to(device) for t in fsq_bound_constants(levels))
    basis = [math.prod(levels[:i]) for i in range(len(levels))]
    f32 = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    i64 = functools.partial(torch.tensor, dtype=torch.int64, device=device)
    return FSQConstants(
        half=half,
        offset=offset,
        shift=shift,
        scale=f32([1.0 / (lv // 2) for lv in levels]),
        half_width=i64([lv // 2 for lv in levels]),
        basis=i64(basis),
    )


def fsq_quantize(z: torch.Tensor, levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize the last axis of ``z`` onto the FSQ grid given by ``levels``.

    Args:
        z: ``[..., d]`` floating tensor, ``d == len(levels)``; any dtype is computed in fp32.
        levels: levels per channel, each >= 2 (e.g. ``(8, 5, 5, 5)`` for 1000 codes).

    Returns:
        ``codes`` fp32 ``[..., d]`` in [-1, 1] carrying the straight-through gradient, and
        ``indices`` int64 ``[...]`` in ``[0, prod(levels))`` (-1 where z holds NaN).
    """
    levels = check_levels(levels)
    check_float_tensor("z", z)
    if z.ndim == 0 or z.shape[-1] != len(levels):
        raise ValueError(f"z's last dimension must equal len(levels)={len(levels)}, got shape {tuple(z.shape)}")
    consts = fsq_constants(levels, z.device)
    flat = z.reshape(-1, len(levels))
    if _dispatch.use_triton(z.device) and flat.shape[0] > 0:
        from .triton_impl.fsq import FSQTritonFunction

        codes, indices = FSQTritonFunction.apply(flat, consts)
    else:
        codes, indices = FSQTorchFunction.apply(flat, consts)
    return codes.view(z.shape), indices.view(z.shape[:-1])


def fsq_indices_to_codes(indices: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Codes fp32 ``[..., d]`` of FSQ ``indices [...]``: the exact inverse of ``fsq_quantize``."""
    levels = check_levels(levels)
    if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices))}")
    consts = fsq_constants(levels, indices.device)
    lv = torch.tensor(levels, dtype=torch.int64, device=indices.device)
    digits = (indices.long()[..., None] // consts.basis) % lv
    return (digits - consts.half_width).float() * consts.scale


class FSQTorchFunction(torch.autograd.Function):
    """PyTorch path: fp32 forward with in-place steps, analytic straight-through backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, consts: FSQConstants) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.tanh(z.float() + consts.shift)
        q = (t * consts.half).sub_(consts.offset).round_()
        digits = q.long().add_(consts.half_width).mul_(consts.basis)
        indices = torch.where(torch.isnan(z).any(-1), -1, digits.sum(-1))
        ctx.save_for_backward(t)
        ctx.consts = consts
        ctx.z_dtype = z.dtype
        ctx.mark_non_differentiable(indices)
        return q.mul_(consts.scale), indices

    @staticmethod
    def backward(ctx, grad_codes: torch.Tensor, _grad_indices: torch.Tensor | None):
        (t,) = ctx.saved_tensors
        c = ctx.consts
        grad = (1.0 - t * t).mul_(c.half * c.scale).mul_(grad_codes)
        return grad.to(ctx.z_dtype), None
