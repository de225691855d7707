"""Softmax attention whose memory is linear in the number of positions.

``attention(q, k, v)`` computes exactly ``softmax(q k^T / sqrt(C)) v`` (each query's softmax runs over all
keys), as ``F.scaled_dot_product_attention`` does. Where PyTorch picks its plain ("math") kernel, it holds
the whole ``[..., N, M]`` score matrix: 17 GB for the 65,536 positions of a 2048x2048 image's middle block
(f8). So when that matrix would pass ``budget_bytes`` the queries are cut into blocks of ``rows`` queries,
``rows = budget_bytes // (batch * heads * M * 4)``, and each block attends to all keys on its own: scores
stay under the budget whatever kernel runs, and the result is the same up to fp32 summation order. Inputs are
made contiguous, which also lets PyTorch choose its fused (flash) kernel on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SCORE_BUDGET_BYTES = 64 << 20  # largest score block [..., rows, M] one call may materialise (fp32 bytes)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, budget_bytes: int | None = None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(C)) v`` for ``q [..., N, C]``, ``k [..., M, C]``, ``v [..., M, Cv]`` -> ``[..., N, Cv]``.

    Small inputs (scores within ``budget_bytes``) take one fused call; larger ones are computed query block by
    query block, so memory beyond the inputs and output is at most about ``budget_bytes`` (default
    ``SCORE_BUDGET_BYTES``; see the module docstring). Autograd works through both paths.
    """
    budget_bytes = SCORE_BUDGET_BYTES if budget_bytes is None else budget_bytes
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    queries, keys = q.shape[-2], k.shape[-2]
    score_row = math.prod(q.shape[:-2]) * keys * max(q.element_size(), 4)  # one query's scores, all batches
    rows = max(1, budget_bytes // max(score_row, 1))
    if rows >= queries:
        return F.scaled_dot_product_attention(q, k, v)
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    for start in range(0, queries, rows):
        out[..., start : start + rows, :] = F.scaled_dot_product_attention(q[..., start : start + rows, :], k, v)
    return out
