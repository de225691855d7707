"""EMA codebook update (van den Oord et al. 2017, appendix; Razavi et al. 2019), in two steps.

Math. With ``counts[k] = #{n : idx_n = k}`` and ``sums[k] = sum_{n : idx_n = k} z_n``:

    cluster_size = decay * cluster_size + (1 - decay) * counts
    embed_sum    = decay * embed_sum    + (1 - decay) * sums
    n            = sum_k cluster_size[k]
    smoothed     = (cluster_size + eps) / (n + K * eps) * n          (Laplace smoothing)
    codebook     = embed_sum / smoothed[:, None]

``codebook_stats`` is the fused first step (the only one that touches N); ``ema_apply_`` the
second. A distributed caller all-reduces ``counts`` and ``sums`` between the two; a single process
calls ``ema_update_``. Indices outside ``[0, K)`` (``nearest_code`` gives -1 to non-finite rows) are
ignored. Statistics are fp32 whatever the latent dtype; on CUDA the sums use fp32 atomics, so their
last bits depend on the order threads arrive in.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import check_float_tensor, check_index_tensor, check_positive_int, check_same_device

# Rows the PyTorch path widens to fp32 at a time (bounds the temporary copy of bf16/fp16 latents).
CPU_ROWS_PER_CHUNK = 1 << 16


def codebook_stats(z: torch.Tensor, idx: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code assignment counts and latent sums, fused into one pass over ``z``.

    Args:
        z: latents ``[N, D]`` (fp32/bf16/fp16).
        idx: code of each latent, integer ``[N]``; entries outside ``[0, num_codes)`` count nowhere.
        num_codes: K, the codebook size.

    Returns:
        ``counts`` fp32 ``[K]`` and ``sums`` fp32 ``[K, D]``.
    """
    check_float_tensor("z", z, ndim=2)
    check_index_tensor("idx", idx, z.shape[0])
    check_positive_int("num_codes", num_codes)
    check_same_device(z=z, idx=idx)
    if _dispatch.use_triton(z.device):
        from .triton_impl.ema_update import codebook_stats_triton

        return codebook_stats_triton(z, idx, num_codes)
    return codebook_stats_torch(z, idx, num_codes)


def codebook_stats_torch(z: torch.Tensor, idx: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch path: ``bincount`` and ``index_add_`` over row chunks (any device)."""
    valid = (idx >= 0) & (idx < num_codes)
    counts = torch.bincount(idx[valid], minlength=num_codes).float()
    sums = torch.zeros(num_codes, z.shape[1], device=z.device)
    for r0 in range(0, z.shape[0], CPU_ROWS_PER_CHUNK):
        keep = valid[r0 : r0 + CPU_ROWS_PER_CHUNK]
        rows = z[r0 : r0 + CPU_ROWS_PER_CHUNK][keep].float()
        sums.index_add_(0, idx[r0 : r0 + CPU_ROWS_PER_CHUNK][keep], rows)
    return counts, sums


def ema_apply_(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    *,
    decay: float,
    eps: float,
) -> torch.Tensor:
    """Second step: decay the running statistics in place, return the smoothed codebook ``[K, D]``."""
    num_codes = _check_ema_state(cluster_size, embed_sum, decay, eps)
    if counts.shape != cluster_size.shape or sums.shape != embed_sum.shape:
        raise ValueError(
            f"counts {tuple(counts.shape)} and sums {tuple(sums.shape)} must match cluster_size "
            f"{tuple(cluster_size.shape)} and embed_sum {tuple(embed_sum.shape)}"
        )
    cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + num_codes * eps) * n
    return embed_sum / smoothed[:, None]


def ema_update_(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    z: torch.Tensor,
    idx: torch.Tensor,
    *,
    decay: float,
    eps: float = 1e-5,
) -> torch.Tensor:
    """One EMA step for a single process: ``codebook_stats`` then ``ema_apply_``.

    Args:
        cluster_size: fp32 ``[K]`` running counts, updated in place.
        embed_sum: fp32 ``[K, D]`` running sums, updated in place.
        z: latents ``[N, D]``; idx: their codes ``[N]`` (as from ``nearest_code``).
        decay: in [0, 1]; eps: Laplace smoothing, > 0.

    Returns:
        The new codebook, fp32 ``[K, D]``.
    """
    num_codes = _check_ema_state(cluster_size, embed_sum, decay, eps)
    check_same_device(cluster_size=cluster_size, embed_sum=embed_sum, z=z)
    if z.ndim == 2 and z.shape[1] != embed_sum.shape[1]:
        raise ValueError(f"z has D={z.shape[1]} but embed_sum has D={embed_sum.shape[1]}; they must match")
    counts, sums = codebook_stats(z, idx, num_codes)
    return ema_apply_(cluster_size, embed_sum, counts, sums, decay=decay, eps=eps)


def _check_ema_state(cluster_size: torch.Tensor, embed_sum: torch.Tensor, decay: float, eps: float) -> int:
    for name, t, ndim in (("cluster_size", cluster_size, 1), ("embed_sum", embed_sum, 2)):
        check_float_tensor(name, t, ndim=ndim)
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32 (codebook statistics are kept in fp32), got {t.dtype}")
    if embed_sum.shape[0] != cluster_size.shape[0] or cluster_size.shape[0] == 0:
        raise ValueError(
            f"cluster_size {tuple(cluster_size.shape)} and embed_sum {tuple(embed_sum.shape)} must agree on K >= 1"
        )
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    if not eps > 0.0:
        raise ValueError(f"eps must be positive, got {eps}")
    return cluster_size.shape[0]
