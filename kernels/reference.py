"""Plain PyTorch definitions of every kernel: the oracle the fast paths are tested against.

Each function states the math in the most direct form PyTorch allows. They are meant to be read
and trusted, not to be fast: ``nearest_code`` builds the full N x K distance matrix and
``codebook_stats`` a one-hot N x K matrix, exactly what the fused kernels avoid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, *, metric: str = "l2", return_distance: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest code for every row of ``z`` (ties to the lowest index).

    ``d[n, k] = ||z_n||^2 - 2 <z_n, e_k> + ||e_k||^2`` in fp32, minimised over ``k``; for
    ``metric="cosine"`` both sides are l2-normalised first. Rows of ``z`` holding NaN or +-Inf get
    index -1 and distance NaN.
    """
    z32, e32 = z.float(), codebook.float()
    if metric == "cosine":
        z32, e32 = F.normalize(z32, dim=1), F.normalize(e32, dim=1)
    raw = (e32 * e32).sum(1)[None, :] - 2.0 * (z32 @ e32.T)
    best, index = raw.min(dim=1)
    finite = torch.isfinite(z).all(dim=1)
    index = torch.where(finite, index, -1)
    if not return_distance:
        return index
    distance = (best + (z32 * z32).sum(1)).clamp_min(0.0)
    return index, torch.where(finite, distance, float("nan"))


def codebook_stats(z: torch.Tensor, idx: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code assignment counts ``[K]`` and latent sums ``[K, D]`` in fp32.

    ``counts = onehot(idx).sum(0)``, ``sums = onehot(idx)^T z``; indices outside ``[0, K)`` (such as
    the -1 that ``nearest_code`` gives non-finite rows) select no code.
    """
    valid = (idx >= 0) & (idx < num_codes)
    onehot = F.one_hot(torch.where(valid, idx, 0), num_codes).float() * valid[:, None]
    return onehot.sum(0), onehot.T @ z.float()


def ema_update_(
    cluster_size: torch.Tensor,
    embed_sum: torch.Tensor,
    z: torch.Tensor,
    idx: torch.Tensor,
    *,
    decay: float,
    eps: float,
) -> torch.Tensor:
    """EMA codebook update with Laplace smoothing; updates the two statistics in place.

    ``cluster_size = decay*cluster_size + (1-decay)*counts``,
    ``embed_sum = decay*embed_sum + (1-decay)*sums``, ``n = sum(cluster_size)``,
    ``smoothed = (cluster_size + eps) / (n + K*eps) * n``, returns ``embed_sum / smoothed[:, None]``.
    """
    counts, sums = codebook_stats(z, idx, cluster_size.shape[0])
    cluster_size.copy_(decay * cluster_size + (1.0 - decay) * counts)
    embed_sum.copy_(decay * embed_sum + (1.0 - decay) * sums)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + cluster_size.shape[0] * eps) * n
    return embed_sum / smoothed[:, None]


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.round() - x).detach()


def fsq_bound_constants(levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 ``half = (L - 1) * (1 + 1e-3) / 2``, ``offset = 0.5 if L even else 0``, ``shift = atanh(offset / half)``.

    Evaluated in fp32 arithmetic, step by step, as the FSQ implementations checkpoints come from do (the FSQ
    paper's code, vector-quantize-pytorch, Cosmos-Tokenizer): computing in float64 and rounding once differs in
    the last bit for even L, which can move a value sitting on a rounding boundary to the other code.
    """
    lv = torch.tensor(list(levels), dtype=torch.int32)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0).to(torch.float32)
    return half, offset, torch.atanh(offset / half)


def fsq_bound(z: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """``tanh(z + shift) * half - offset`` per channel, in fp32: the values FSQ rounds."""
    half, offset, shift = (t.to(z.device) for t in fsq_bound_constants(levels))
    return torch.tanh(z.float() + shift) * half - offset


def fsq_quantize(z: torch.Tensor, levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite scalar quantization (Mentzer et al. 2023, arXiv:2309.15505).

    ``q = round_ste(fsq_bound(z))``, ``codes = q / (L // 2)`` in [-1, 1] (fp32),
    ``index = sum_i (q_i + L_i // 2) * prod_{j<i} L_j`` (int64). Gradient: straight through the
    rounding, through the bound function.
    """
    half_width = torch.tensor([lv // 2 for lv in levels], device=z.device)
    q = _round_ste(fsq_bound(z, levels))
    basis = torch.cumprod(torch.tensor([1, *levels[:-1]], device=z.device), 0)
    digits = q.detach().long() + half_width
    return q / half_width, (digits * basis).sum(-1)


def fsq_indices_to_codes(indices: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """Inverse of ``fsq_quantize``'s indices: ``digit_i = (index // prod_{j<i} L_j) % L_i``."""
    lv = torch.tensor(levels, device=indices.device)
    half_width = lv // 2
    basis = torch.cumprod(torch.tensor([1, *levels[:-1]], device=indices.device), 0)
    digits = (indices[..., None] // basis) % lv
    return (digits - half_width).float() / half_width
