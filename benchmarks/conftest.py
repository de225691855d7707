"""pytest-benchmark fixtures: the device, the size grid, and a runner recording peak memory.

``pytest benchmarks/`` runs the default grid (minutes on 2 CPU cores); ``BENCH_FULL=1`` the full one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # the repository root: tests._models

from _measure import bench_device, peak_memory_bytes, sync

FULL = os.environ.get("BENCH_FULL") == "1"
DEVICE = bench_device()
# Reference paths materialise N x K fp32 matrices; skip them beyond this.
REFERENCE_LIMIT_BYTES = 6 << 30


@pytest.fixture
def device() -> torch.device:
    return DEVICE


def skip_if_too_big(n: int, k: int, what: str = "the reference") -> None:
    needed = 4 * n * k
    if needed > REFERENCE_LIMIT_BYTES:
        pytest.skip(f"{what} would build a {n}x{k} fp32 matrix ({needed / 2**30:.1f} GiB)")


def run(benchmark, fn: Callable[[], Any], device: torch.device, rounds: int | None = None, **info: Any) -> Any:
    """Time ``fn`` with pytest-benchmark (synchronised) and record its peak memory in extra_info."""
    result, peak = peak_memory_bytes(fn, device)
    benchmark.extra_info.update(info)
    benchmark.extra_info["peak_mib"] = None if peak is None else round(peak / 2**20, 1)

    def timed():
        out = fn()
        sync(device)
        return out

    if rounds is None:
        rounds = 20 if device.type == "cuda" else 3
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    return result
