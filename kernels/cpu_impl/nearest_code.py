"""``nearest_code`` on CPU through the compiled kernel (``csrc/nearest_code_kernel.h``), one native call.

Why a kernel of our own. For small D the search is bound by multiply-adds, for large D by how well the
distance tiles stay in cache; faiss (the fastest library at this) keeps a per-code index update in its
fused small-D loop and writes 4096 x 1024 distance blocks to memory at larger D. The kernel here keeps
4 x 64 distances (AVX-512) in registers and folds them into per-lane minima, remembering the code vector
(or, for small D with a large codebook, only the block, the index then recovered once per row);
``benchmarks/RESULTS.md`` has the figures against faiss: 0.03-0.91 of its time over issue 17's grid.

Contract, as on the other paths:
- Distances: ``||e_k||^2 - 2 <z_n, e_k>`` as one fp32 FMA chain per code, ``||z_n||^2`` added at the
  end and clamped at 0. ``metric="cosine"`` divides both sides by their norms (clamped at 1e-12, as
  ``F.normalize``) inside the kernel, then runs the same l2 search. Only the summation order differs
  from the PyTorch path, so indices can differ only on fp32 near-ties.
- Ties: the lowest index among codes at equal computed distance.
- Non-finite rows: index -1, distance NaN. Finite rows whose every distance overflows fp32 are redone
  on the PyTorch path.
- fp16/bf16 inputs are widened to fp32 (exactly) before the call. Each row is computed by one thread in
  a fixed order: results do not depend on the number of threads or on how a batch is split.
"""

from __future__ import annotations

import torch

from . import _nearest_code

# The kernels this CPU can run, fastest first; ``ISA`` is the one calls use (tests switch it).
INSTRUCTION_SETS: tuple[str, ...] = _nearest_code.instruction_sets()
ISA: str = INSTRUCTION_SETS[0] if INSTRUCTION_SETS else ""


def nearest_code_cpu(
    z: torch.Tensor, codebook: torch.Tensor, *, cosine: bool, return_distance: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Indices ``[N]`` (int64) and, with ``return_distance``, fp32 squared distances ``[N]`` of
    ``kernels.nearest_code``, for CPU tensors ``z [N, D]`` (N >= 1) and ``codebook [K, D]``.

    No PyTorch op runs before the kernel for fp32 input (normalising for cosine happens inside it): an
    op's OpenMP workers keep spinning for milliseconds afterwards and would share the cores with it.
    """
    queries = z.detach().float().contiguous()
    codes = codebook.detach().float().contiguous()
    n, d = queries.shape
    index = torch.empty(n, dtype=torch.int64)
    distance = torch.empty(n)
    _nearest_code.search(
        ISA, queries.data_ptr(), n, codes.data_ptr(), codes.shape[0], d, cosine,
        index.data_ptr(), distance.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    # Rows left at -1: non-finite input (-1 / NaN), or finite rows whose every distance overflows fp32
    # (redone on the PyTorch path).
    lost = (index < 0).nonzero()[:, 0]
    if lost.numel():
        distance[lost] = float("nan")
        redo = lost[torch.isfinite(queries[lost]).all(dim=1)]
        if redo.numel():
            from ..nearest_code import nearest_code_torch

            index[redo], distance[redo] = nearest_code_torch(queries[redo], codes, cosine=cosine, return_distance=True)
    return index, (distance if return_distance else None)
