"""Triton FSQ: one fused launch for the forward (bound, round, codes, indices) and one for the
backward (straight-through gradient of the bound, recomputed from ``z``)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dispatch import device_guard, interpretable

# Adding then subtracting 1.5 * 2**23 rounds an fp32 |x| < 2**22 to the nearest integer, half to
# even (IEEE round-to-nearest does the work); libdevice.rint would too but the interpreter lacks it.
_ROUND_MAGIC = 12582912.0
BLOCK_ROWS = 256


@triton.jit
def _tanh(x):
    """tanh from exp (no libdevice, so the interpreter runs it): sign(x) (1 - e) / (1 + e), e = exp(-2|x|)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _fsq_forward_kernel(
    z_ptr, half_ptr, offset_ptr, shift_ptr, scale_ptr, half_width_ptr, basis_ptr, codes_ptr, indices_ptr,
    M, C,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, MAGIC: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ch = tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    mask = (rows < M)[:, None] & ch_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * C + ch[None, :]
    half = tl.load(half_ptr + ch, mask=ch_ok, other=0.0)
    offset = tl.load(offset_ptr + ch, mask=ch_ok, other=0.0)
    shift = tl.load(shift_ptr + ch, mask=ch_ok, other=0.0)
    scale = tl.load(scale_ptr + ch, mask=ch_ok, other=0.0)
    half_width = tl.load(half_width_ptr + ch, mask=ch_ok, other=0)
    basis = tl.load(basis_ptr + ch, mask=ch_ok, other=0)

    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    bounded = _tanh(z + shift[None, :]) * half[None, :] - offset[None, :]
    q = (bounded + MAGIC) - MAGIC
    tl.store(codes_ptr + offs, q * scale[None, :], mask=mask)

    is_nan = q != q  # noqa: PLR0124 -- NaN test inside a Triton kernel
    digits = tl.where(is_nan, 0.0, q).to(tl.int64) + half_width[None, :]
    index = tl.sum(tl.where(mask, digits * basis[None, :], 0), axis=1)
    any_nan = tl.sum((is_nan & mask).to(tl.int32), axis=1) > 0
    tl.store(indices_ptr + rows, tl.where(any_nan, -1, index), mask=rows < M)


@triton.jit
def _fsq_backward_kernel(
    z_ptr, grad_codes_ptr, half_ptr, shift_ptr, scale_ptr, grad_z_ptr,
    M, C,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ch = tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    mask = (rows < M)[:, None] & ch_ok[None, :]
    offs = rows.to(tl.int64)[:, None] * C + ch[None, :]
    half = tl.load(half_ptr + ch, mask=ch_ok, other=0.0)
    shift = tl.load(shift_ptr + ch, mask=ch_ok, other=0.0)
    scale = tl.load(scale_ptr + ch, mask=ch_ok, other=0.0)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(grad_codes_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = _tanh(z + shift[None, :])
    grad = g * (half * scale)[None, :] * (1.0 - t * t)
    tl.store(grad_z_ptr + offs, grad.to(grad_z_ptr.dtype.element_ty), mask=mask)


class FSQTritonFunction(torch.autograd.Function):
    """Triton path of ``fsq_quantize`` on ``z [M, d]``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, consts) -> tuple[torch.Tensor, torch.Tensor]:
        z_in = interpretable(z).contiguous()
        m, c = z_in.shape
        codes = torch.empty(m, c, device=z.device)
        indices = torch.empty(m, dtype=torch.int64, device=z.device)
        with device_guard(z_in):
            _fsq_forward_kernel[(triton.cdiv(m, BLOCK_ROWS),)](
                z_in, consts.half, consts.offset, consts.shift, consts.scale, consts.half_width, consts.basis,
                codes, indices, m, c,
                BLOCK_M=BLOCK_ROWS, BLOCK_C=triton.next_power_of_2(c), MAGIC=_ROUND_MAGIC,
            )  # fmt: skip
        ctx.save_for_backward(z_in)
        ctx.consts = consts
        ctx.z_dtype = z.dtype
        ctx.mark_non_differentiable(indices)
        return codes, indices

    @staticmethod
    def backward(ctx, grad_codes: torch.Tensor, _grad_indices: torch.Tensor | None):
        (z_in,) = ctx.saved_tensors
        c = ctx.consts
        m, ch = z_in.shape
        grad_codes = grad_codes.contiguous()
        grad_z = torch.empty_like(z_in)
        with device_guard(z_in):
            _fsq_backward_kernel[(triton.cdiv(m, BLOCK_ROWS),)](
                z_in, grad_codes, c.half, c.shift, c.scale, grad_z, m, ch,
                BLOCK_M=BLOCK_ROWS, BLOCK_C=triton.next_power_of_2(ch),
            )  # fmt: skip
        return grad_z.to(ctx.z_dtype), None
