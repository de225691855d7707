"""``nearest_code`` on CPU through faiss's exact k=1 search (``faiss.knn_L2sqr``), one native call.

The fallback where the compiled kernel (``cpu_impl``) is not built. Why faiss there: for k=1 it
fuses the distance and the running minimum: for D in {2, 3, 4, 6, 8, 12, 16} a register-tiled SIMD
kernel that never writes a distance to memory, otherwise sgemm into a bounded 4096 x 1024 block
followed by a SIMD argmin. Both are parallel over queries in one OpenMP region, so
a busy machine stalls it once, not once per small ATen op. No PyTorch program reaches the fused
kernel's speed at small D: merely writing the distance blocks costs more.

Contract, as on the other paths:
- Distances: faiss minimises ``||e_k||^2 - 2 <z_n, e_k>`` in fp32 and adds ``||z_n||^2`` at the end,
  clamped at 0 (the expansion of the PyTorch path; only the summation order differs, so indices can
  differ only on fp32 near-ties). ``metric="cosine"`` normalises both sides in PyTorch first, then
  runs the same l2 search.
- Ties: both faiss kernels keep the first code on equal computed distance (strict ``<`` while walking
  codes in order, and the lower index when SIMD lanes are merged): ties go to the lowest index.
- Non-finite rows: faiss leaves them at index -1 or a non-finite distance; they get -1 / NaN here.
  Finite rows whose every distance overflows fp32 (faiss finds no code below FLT_MAX) are redone on
  the PyTorch path.
- fp16/bf16 inputs are widened to fp32 (exactly) before the call. Results do not depend on the
  number of threads (each row is computed by one thread, in a fixed order).

faiss chooses its slow one-query-at-a-time loop when ``N * D`` is below the global
``faiss.cvar.distance_compute_blas_threshold``; the call below sets that threshold to 0 for its own
duration (under a lock, restored afterwards), so every shape takes the fused/BLAS kernels. A faiss
search running meanwhile in another thread would take them too, which changes only its speed.
"""

from __future__ import annotations

import threading

import faiss
import torch
import torch.nn.functional as F

_THRESHOLD_LOCK = threading.Lock()


def nearest_code_faiss(
    z: torch.Tensor, codebook: torch.Tensor, *, cosine: bool, return_distance: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices ``[N]`` (int64) and, with ``return_distance``, fp32 squared distances ``[N]`` of
    ``kernels.nearest_code``, for CPU tensors ``z [N, D]`` (N >= 1) and ``codebook [K, D]``."""
    queries = z.detach().float().contiguous()
    codes = codebook.detach().float().contiguous()
    if cosine:
        queries, codes = F.normalize(queries, dim=1), F.normalize(codes, dim=1)
    n, d = queries.shape
    distance = torch.empty(n)
    index = torch.empty(n, dtype=torch.int64)
    with _THRESHOLD_LOCK:
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 0
        try:
            faiss.knn_L2sqr(
                faiss.swig_ptr(queries.numpy()), faiss.swig_ptr(codes.numpy()), d, n, codes.shape[0], 1,
                faiss.swig_ptr(distance.numpy()), faiss.swig_ptr(index.numpy()),
            )  # fmt: skip
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved
    # faiss leaves a row holding NaN/Inf at index -1 (no distance compares below its initial FLT_MAX)
    # or at a non-finite distance (``||z||^2`` is added last), so only rows flagged by this pass over
    # [N] are checked element by element.
    flagged = ((index < 0) | ~torch.isfinite(distance)).nonzero()[:, 0]
    if flagged.numel():
        finite = torch.isfinite(queries[flagged]).all(dim=1)
        index[flagged[~finite]] = -1
        distance[flagged[~finite]] = float("nan")
        lost = flagged[finite & (index[flagged] < 0)]  # finite rows whose distances overflow fp32
        if lost.numel():
            from ..nearest_code import nearest_code_torch

            index[lost], lost_distance = nearest_code_torch(queries[lost], codes, cosine=False, return_distance=True)
            distance[lost] = lost_distance
    return index, (distance if return_distance else None)
