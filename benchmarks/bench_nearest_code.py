"""nearest_code vs faiss (optional, benchmark-only peer), chunked torch mm + argmin, cdist + argmin and the
N x K reference, side by side. ``report.py --nearest`` prints the same comparison as one table.

The issue's grid: N in {4096, 65536}, K in {1024, 16384, 65536}, D in {4, 8, 16, 32, 64, 256}, l2 and
cosine (faiss: IndexFlatL2 / IndexFlatIP on l2-normalised vectors, k=1). ``BENCH_FULL=1`` runs it all.
``ours`` and ``faiss`` are timed alike: each call gets the raw latents and codebook, so faiss's time
includes building its index (``add``) and, for cosine, normalising both sides, as ours includes its own
preparation. mm+argmin and cdist get pre-normalised inputs (their cosine time excludes normalising).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, FULL, REFERENCE_LIMIT_BYTES, run, skip_if_too_big

import kernels
from kernels import reference

GRID = list(itertools.product((4096, 65536), (1024, 16384, 65536), (4, 8, 16, 32, 64, 256)))
QUICK = [(4096, 1024, 8), (4096, 1024, 32), (4096, 1024, 256), (4096, 16384, 8), (65536, 16384, 8)]
SHAPES = GRID if FULL else QUICK
if FULL and DEVICE.type == "cuda":
    SHAPES += [(262144, k, d) for k in (1024, 16384, 65536) for d in (8, 32, 256)] + [(65537, 1031, 12)]
IMPLS = ["ours", "faiss", "mm_argmin", "cdist_argmin", "reference"]
# Distance block of the chunked mm + argmin baseline.
MM_BLOCK_BYTES = 64 << 20


def nearest_code_calls(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2") -> dict[str, Callable[[], Any]]:
    """Each implementation as a zero-argument call returning indices; faiss only when installed,
    N x K baselines only below ``REFERENCE_LIMIT_BYTES``."""
    n, k = z.shape[0], codebook.shape[0]
    zn, cn = (F.normalize(z, dim=1), F.normalize(codebook, dim=1)) if metric == "cosine" else (z, codebook)
    calls = {"ours": lambda: kernels.nearest_code(z, codebook, metric=metric)}
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None and z.device.type == "cpu":
        flat = faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2

        def faiss_search() -> torch.Tensor:
            # As a user calls it, and as ``ours`` is called: from the raw tensors, each call builds the
            # index from the codebook (add = copy + norms), normalises both sides for cosine, searches k=1.
            queries, codes = (
                (F.normalize(z, dim=1), F.normalize(codebook, dim=1)) if metric == "cosine" else (z, codebook)
            )
            index = flat(z.shape[1])
            index.add(codes.numpy())
            return torch.from_numpy(index.search(queries.numpy(), 1)[1][:, 0])

        calls["faiss"] = faiss_search
    rows = max(1, MM_BLOCK_BYTES // (4 * k))
    squared = (cn * cn).sum(1)

    def mm_argmin() -> torch.Tensor:
        return torch.cat([(squared - 2 * zn[r : r + rows] @ cn.T).argmin(1) for r in range(0, n, rows)])

    calls["mm_argmin"] = mm_argmin
    if 4 * n * k <= REFERENCE_LIMIT_BYTES:
        calls["cdist_argmin"] = lambda: torch.cdist(zn, cn).argmin(1)
        calls["reference"] = lambda: reference.nearest_code(z, codebook, metric=metric)
    return calls


def mm_gflops(device: torch.device, size: int = 2048, rounds: int = 5) -> float:
    """This machine's torch.mm fp32 throughput (best of ``rounds``), the ceiling GFLOP/s are read against."""
    from _measure import time_runs

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    return 2 * size**3 / min(time_runs(lambda: a @ b, device, rounds=rounds, warmup=1)) / 1e9


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-K{}-D{}".format(*s))
def test_nearest_code(benchmark, device, shape, metric, impl):
    n, k, d = shape
    benchmark.group = f"nearest_code {metric} N={n} K={k} D={d}"
    if impl in ("cdist_argmin", "reference"):
        skip_if_too_big(n, k, impl)
    z = torch.randn(n, d, device=device)
    codebook = torch.randn(k, d, device=device)
    calls = nearest_code_calls(z, codebook, metric)
    if impl not in calls:
        pytest.skip(f"{impl} is not available here (faiss: pip install faiss-cpu, CPU only)")
    rounds = 2 if device.type == "cpu" and n * k * d > 2**32 else None
    result = run(benchmark, calls[impl], device, rounds=rounds)
    if benchmark.stats is not None:
        benchmark.extra_info["gflops"] = round(2 * n * k * d / benchmark.stats.stats.min / 1e9, 1)
    if impl != "ours":  # cross-check while the tensors are here
        ours = kernels.nearest_code(z, codebook, metric=metric)
        assert (ours.cpu() == result.cpu()).float().mean() > 0.999
