"""Triton nearest-code kernel: codebook tiles streamed past a block of latents, running argmin.

Each program owns ``BLOCK_N`` latents and one slice of the codebook (``split`` slices in all, so
that small N still fills the GPU). Per codebook tile it computes ``||e||^2 - 2 z.e^T`` with
``tl.dot`` (fp32 accumulation; fp32 inputs use 3xTF32 for fp32-level accuracy), takes the tile
minimum with the lowest index on ties, and keeps the best so far in registers: the N x K matrix
never exists. Slices are merged on the host by a [split, N] minimum that prefers earlier slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .._dispatch import device_guard, interpretable


@triton.jit
def _nearest_code_kernel(
    z_ptr,
    codes_ptr,
    codes_sq_ptr,
    best_ptr,
    index_ptr,
    z_sq_ptr,
    N,
    K,
    D,
    codes_per_split,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ONE_D_BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
    WRITE_Z_SQ: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_split = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_base = rows.to(tl.int64) * D
    dims = tl.arange(0, BLOCK_D)

    # One pass over the rows: squared norms and a count of non-finite entries.
    z_sq = tl.zeros([BLOCK_N], dtype=tl.float32)
    non_finite = tl.zeros([BLOCK_N], dtype=tl.int32)
    for d0 in range(0, D, BLOCK_D):
        mask = row_ok[:, None] & ((d0 + dims) < D)[None, :]
        zt = tl.load(z_ptr + row_base[:, None] + d0 + dims[None, :], mask=mask, other=0.0).to(tl.float32)
        z_sq += tl.sum(zt * zt, axis=1)
        non_finite += tl.sum(((zt != zt) | (tl.abs(zt) == float("inf"))).to(tl.int32), axis=1)  # noqa: PLR0124

    # Rows holding NaN/Inf are read as zeros (their result is overwritten below), so every
    # distance stays finite and the running minimum never sees NaN.
    finite = non_finite == 0
    if ONE_D_BLOCK:
        z_tile = tl.load(
            z_ptr + row_base[:, None] + dims[None, :], mask=(row_ok & finite)[:, None] & (dims < D)[None, :], other=0.0
        )

    best = tl.full([BLOCK_N], float("inf"), dtype=tl.float32)
    best_index = tl.zeros([BLOCK_N], dtype=tl.int32)
    k_start = pid_split * codes_per_split
    k_stop = tl.minimum(k_start + codes_per_split, K)
    for k0 in range(k_start, k_stop, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < k_stop
        col_base = cols.to(tl.int64) * D
        if ONE_D_BLOCK:
            codes_t = tl.load(
                codes_ptr + col_base[None, :] + dims[:, None], mask=(dims < D)[:, None] & col_ok[None, :], other=0.0
            )
            dot = tl.dot(z_tile, codes_t, input_precision=PRECISION)
        else:
            dot = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                d_ok = (d0 + dims) < D
                zt = tl.load(
                    z_ptr + row_base[:, None] + d0 + dims[None, :],
                    mask=(row_ok & finite)[:, None] & d_ok[None, :],
                    other=0.0,
                )
                codes_t = tl.load(
                    codes_ptr + col_base[None, :] + d0 + dims[:, None], mask=d_ok[:, None] & col_ok[None, :], other=0.0
                )
                dot = tl.dot(zt, codes_t, dot, input_precision=PRECISION)
        codes_sq = tl.load(codes_sq_ptr + cols, mask=col_ok, other=float("inf"))
        dist = codes_sq[None, :] - 2.0 * dot
        tile_best, tile_arg = tl.min(dist, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, k0 + tile_arg, best_index)

    out = pid_split.to(tl.int64) * N + rows
    tl.store(best_ptr + out, tl.where(finite, best, float("nan")), mask=row_ok)
    tl.store(index_ptr + out, tl.where(finite, best_index, -1).to(tl.int64), mask=row_ok)
    if WRITE_Z_SQ:  # noqa: SIM102 -- a compile-time branch around a runtime one
        if pid_split == 0:
            tl.store(z_sq_ptr + rows, z_sq, mask=row_ok)


def _config(dim: int) -> dict:
    """Tile sizes: one D block up to 64 channels (latents stay in registers), else 64-wide D steps."""
    block_d = max(16, triton.next_power_of_2(dim))
    if block_d <= 64:
        return {
            "BLOCK_N": 128,
            "BLOCK_K": 128,
            "BLOCK_D": block_d,
            "ONE_D_BLOCK": True,
            "num_warps": 8,
            "num_stages": 3,
        }
    return {"BLOCK_N": 128, "BLOCK_K": 64, "BLOCK_D": 64, "ONE_D_BLOCK": False, "num_warps": 8, "num_stages": 3}


def _default_split(z: torch.Tensor, n_blocks: int, k_tiles: int) -> int:
    """Enough codebook slices for about two programs per SM (one slice when interpreting)."""
    if z.device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(z.device).multi_processor_count
    return max(1, min(k_tiles, -(-2 * sms // n_blocks)))


def nearest_code_triton(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    cosine: bool,
    return_distance: bool,
    split: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the kernel; ``split`` (codebook slices) defaults to filling the device."""
    z, codebook = interpretable(z), interpretable(codebook)
    if cosine:
        z, codebook = F.normalize(z.float(), dim=1), F.normalize(codebook.float(), dim=1)
    elif z.dtype != codebook.dtype or z.dtype == torch.float64:
        z, codebook = z.float(), codebook.float()
    z, codebook = z.contiguous(), codebook.contiguous()
    n, dim = z.shape
    num_codes = codebook.shape[0]
    codes_f32 = codebook.float()
    codes_sq = (codes_f32 * codes_f32).sum(1)

    cfg = _config(dim)
    n_blocks = triton.cdiv(n, cfg["BLOCK_N"])
    k_tiles = triton.cdiv(num_codes, cfg["BLOCK_K"])
    split = split or _default_split(z, n_blocks, k_tiles)
    codes_per_split = triton.cdiv(k_tiles, split) * cfg["BLOCK_K"]
    split = triton.cdiv(num_codes, codes_per_split)

    best = torch.empty(split, n, device=z.device)
    index = torch.empty(split, n, dtype=torch.int64, device=z.device)
    z_sq = torch.empty(n, device=z.device) if return_distance else best
    precision = "tf32x3" if z.dtype == torch.float32 else None
    with device_guard(z):
        _nearest_code_kernel[(n_blocks, split)](
            z, codebook, codes_sq, best, index, z_sq, n, num_codes, dim, codes_per_split,
            PRECISION=precision, WRITE_Z_SQ=return_distance, **cfg,
        )  # fmt: skip
    if split > 1:
        best, which = best.min(dim=0)  # NaN rows stay NaN; ties keep the earliest slice
        index = index.gather(0, which[None])[0]
    else:
        best, index = best[0], index[0]
    if not return_distance:
        return index, None
    distance = torch.where(index >= 0, (best + z_sq).clamp_min(0.0), float("nan"))
    return index, distance
