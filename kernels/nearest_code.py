"""Nearest-codebook search: ``argmin_k ||z_n - e_k||^2`` without the N x K distance matrix.

Math. With ``||e_k||^2`` precomputed, ``argmin_k ||z_n - e_k||^2 = argmin_k (||e_k||^2 - 2 <z_n, e_k>)``;
``||z_n||^2`` is added back only when distances are returned. ``metric="cosine"`` l2-normalises both
sides first, so its distance is ``||z/|z| - e/|e| ||^2 = 2 - 2 cos``. All arithmetic is fp32
whatever the input dtype (fp16/bf16 products are exact in fp32).

Ties. Codes at equal computed distance go to the lowest index. The dot products come from matrix
multiply units whose rounding can differ in the last bit from one code to the next, so codes that
are equidistant only in exact arithmetic (not in fp32) may resolve either way.

Non-finite input. A row of ``z`` holding NaN or +-Inf has no nearest code: its index is -1 and its
distance NaN, on every path (``codebook_stats`` ignores such rows). The codebook must be finite.

Paths (see ``_dispatch``): Triton tiles over the codebook with a running minimum in registers
(``triton_impl/nearest_code.py``); on CPU, the compiled AVX-512/AVX2 kernel, which does the same in SIMD
registers (``cpu_impl/nearest_code.py``, one native call); where it is not built, faiss's fused k=1
search when faiss is installed (``faiss_impl/nearest_code.py``); else the PyTorch path, which walks
blocks of rows x codes whose size is bounded by ``CPU_BLOCK_BYTES``, so memory stays flat however large
N and K grow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch
from ._checks import check_float_tensor, check_same_device

METRICS = ("l2", "cosine")

# Distance block of the PyTorch path: rows x codes x 4 bytes stays under this.
CPU_BLOCK_BYTES = 16 << 20
# The PyTorch path takes a block's minimum in groups of this many codes (a fast vectorised amin),
# then an argmin over group minima, then an argmin inside the winning group only.
_GROUP = 64


def nearest_code(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    metric: str = "l2",
    return_distance: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest codebook entry for each latent.

    Args:
        z: latents ``[N, D]``, fp32/bf16/fp16 (N may be 0).
        codebook: codes ``[K, D]`` on the same device, K >= 1.
        metric: ``"l2"`` (squared Euclidean) or ``"cosine"`` (both sides l2-normalised).
        return_distance: also return the squared distance to the chosen code.

    Returns:
        int64 indices ``[N]`` in ``[0, K)`` (-1 for rows holding NaN/Inf), and with
        ``return_distance`` fp32 squared distances ``[N]`` (NaN for those rows).
    """
    check_float_tensor("z", z, ndim=2)
    check_float_tensor("codebook", codebook, ndim=2)
    check_same_device(z=z, codebook=codebook)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must hold at least one code (K >= 1), got shape (0, D)")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z has D={z.shape[1]} but codebook has D={codebook.shape[1]}; they must match")
    if z.shape[0] == 0:
        index = torch.empty(0, dtype=torch.int64, device=z.device)
        return (index, torch.empty(0, device=z.device)) if return_distance else index

    cosine = metric == "cosine"
    path = _dispatch.nearest_code_path(z.device)
    if path == "triton":
        from .triton_impl.nearest_code import nearest_code_triton

        index, distance = nearest_code_triton(z, codebook, cosine=cosine, return_distance=return_distance)
    elif path == "native":
        from .cpu_impl.nearest_code import nearest_code_cpu

        index, distance = nearest_code_cpu(z, codebook, cosine=cosine, return_distance=return_distance)
    elif path == "faiss":
        from .faiss_impl.nearest_code import nearest_code_faiss

        index, distance = nearest_code_faiss(z, codebook, cosine=cosine, return_distance=return_distance)
    else:
        index, distance = nearest_code_torch(z, codebook, cosine=cosine, return_distance=return_distance)
    return (index, distance) if return_distance else index


def nearest_code_torch(
    z: torch.Tensor, codebook: torch.Tensor, *, cosine: bool, return_distance: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vectorised PyTorch path over bounded blocks of rows x codes (any device).

    Each ATen op is a parallel region that stalls when another job shares the cores, so a block issues
    few of them: one ``addmm`` per codebook chunk into a reused buffer and the grouped minimum
    (``_first_min``); the finite-row test runs once over all of ``z``, the -1 / NaN marking once at the end.
    """
    n = z.shape[0]
    codes = codebook.float()
    if cosine:
        codes = F.normalize(codes, dim=1)
    chunks = _code_chunks(codes, width=16384)
    widest = chunks[0][1].shape[1]
    rows = max(1, min(n, CPU_BLOCK_BYTES // (4 * widest)))
    buffer = torch.empty(rows * widest, device=z.device)
    row_ids = torch.arange(rows, device=z.device)
    # Widening fp16/bf16 or normalising keeps a finite row finite, but narrowing fp64 does not (1e39 -> inf):
    # test the fp32 values that are searched.
    bad = ~torch.isfinite(z.float() if z.dtype == torch.float64 else z).all(dim=1)
    index = torch.empty(n, dtype=torch.int64, device=z.device)
    best = torch.empty(n, device=z.device)
    distance = torch.empty(n, device=z.device) if return_distance else None
    for r0 in range(0, n, rows):
        zc = z[r0 : r0 + rows].float()  # no copy for fp32 input
        if cosine:
            zc = F.normalize(zc, dim=1)
        m = zc.shape[0]
        best_rows, index_rows = best[r0 : r0 + m], index[r0 : r0 + m]
        for k0, codes_chunk, sq_chunk in chunks:
            block = buffer[: m * codes_chunk.shape[1]].view(m, -1)
            torch.addmm(sq_chunk, zc, codes_chunk, beta=1.0, alpha=-2.0, out=block)
            value, where = _first_min(block, row_ids[:m])
            if k0 == 0:
                best_rows.copy_(value)
                index_rows.copy_(where)
            else:  # strict <: on equal distance the earlier chunk (lower index) keeps the row
                better = value < best_rows
                best_rows.copy_(torch.where(better, value, best_rows))
                index_rows.copy_(torch.where(better, where + k0, index_rows))
        if distance is not None:
            torch.add(best_rows, (zc * zc).sum(1), out=distance[r0 : r0 + m]).clamp_min_(0.0)
    index.masked_fill_(bad, -1)
    if distance is not None:
        distance.masked_fill_(bad, float("nan"))
    return index, distance


def _code_chunks(codes: torch.Tensor, width: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(first code, codes^T [D, w], ||codes||^2 [w])`` per run of at most ``width`` codes, each
    padded to whole ``_GROUP``s with codes at infinite distance (they never win)."""
    chunks = []
    for k0 in range(0, codes.shape[0], width):
        block = codes[k0 : k0 + width]
        pad = -block.shape[0] % _GROUP
        squared = F.pad((block * block).sum(1), (0, pad), value=float("inf"))
        chunks.append((k0, F.pad(block, (0, 0, 0, pad)).T.contiguous(), squared))
    return chunks


def _first_min(dist: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row minima of ``dist [m, C]`` (C a multiple of ``_GROUP``) and the first column reaching them;
    ``rows`` is ``arange(m)``.

    ``torch.min(dim=1)`` with indices is ~20x slower than ``amin`` on CPU, so: minima of groups of
    ``_GROUP`` columns, the first group holding the row minimum, then the first column inside it.
    """
    m, cols = dist.shape
    grouped = dist.view(m, cols // _GROUP, _GROUP)
    group_min = grouped.amin(dim=2)
    group = group_min.argmin(dim=1)
    inside = grouped[rows, group].argmin(dim=1)
    return group_min[rows, group], group * _GROUP + inside
