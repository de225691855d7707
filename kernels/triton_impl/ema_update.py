"""Triton codebook statistics: one pass over the latents, fp32 atomics into counts and sums.

A program takes ``BLOCK_N`` latents x ``BLOCK_D`` channels. When all its valid latents share one
code (collapsed codebooks, the worst case for atomics) it reduces the block in registers and issues
one atomic per channel; otherwise one atomic per element.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dispatch import device_guard, interpretable


@triton.jit
def _codebook_stats_kernel(
    z_ptr,
    idx_ptr,
    counts_ptr,
    sums_ptr,
    N,
    K,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    idx = tl.load(idx_ptr + rows, mask=rows < N, other=-1).to(tl.int64)
    valid = (rows < N) & (idx >= 0) & (idx < K)
    mask = valid[:, None] & col_ok[None, :]
    z = tl.load(z_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)

    lowest = tl.min(tl.where(valid, idx, K), axis=0)
    highest = tl.max(tl.where(valid, idx, -1), axis=0)
    if lowest == highest:
        tl.atomic_add(sums_ptr + lowest * D + cols, tl.sum(z, axis=0), mask=col_ok)
        if pid_d == 0:
            tl.atomic_add(counts_ptr + lowest, tl.sum(valid.to(tl.float32), axis=0))
    else:
        tl.atomic_add(sums_ptr + idx[:, None] * D + cols[None, :], z, mask=mask)
        if pid_d == 0:
            tl.atomic_add(counts_ptr + idx, tl.full([BLOCK_N], 1.0, tl.float32), mask=valid)


def codebook_stats_triton(z: torch.Tensor, idx: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = interpretable(z).contiguous()
    idx = idx.contiguous()
    n, dim = z.shape
    counts = torch.zeros(num_codes, device=z.device)
    sums = torch.zeros(num_codes, dim, device=z.device)
    if n == 0:
        return counts, sums
    block_d = min(128, max(16, triton.next_power_of_2(dim)))
    block_n = 64
    grid = (triton.cdiv(n, block_n), triton.cdiv(dim, block_d))
    with device_guard(z):
        _codebook_stats_kernel[grid](z, idx, counts, sums, n, num_codes, dim, BLOCK_N=block_n, BLOCK_D=block_d)
    return counts, sums
