"""Measurement helpers shared by the pytest benchmarks and ``report.py``: device choice,
synchronisation, wall-clock timing and peak memory of one call.

Peak memory, per device:

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus what was
  allocated before the call: the most tensor memory the call held at once (inputs excluded).
- CPU: growth of the *process resident set high-water mark*. ``5`` is written to
  ``/proc/self/clear_refs`` (resets ``VmHWM`` to the current RSS), ``VmRSS`` is read, the call runs,
  and ``VmHWM - VmRSS_before`` is returned. It counts every page the process touched during the
  call (tensors, allocator overhead, code paged in), so it is an upper bound on the call's own
  working memory. Freed-but-cached glibc heap would hide allocations, so ``gc.collect()`` and
  ``malloc_trim(0)`` run first. Without ``/proc/self/clear_refs`` (non-Linux) the figure is ``None``.

Measure memory on a separate call, never inside a timing loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

MIB = float(1 << 20)
DEVICE_ENV = "BENCH_DEVICE"


def bench_device() -> torch.device:
    """The device benchmarks run on: ``$BENCH_DEVICE`` if set, else CUDA when available, else CPU."""
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, synchronising ``device`` before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_runs(fn: Callable[[], object], device: torch.device, *, rounds: int, warmup: int = 0) -> list[float]:
    """``warmup`` untimed calls, then the seconds of each of ``rounds`` timed calls."""
    for _ in range(warmup):
        fn()
    return [time_call(fn, device) for _ in range(rounds)]


# Pause before each timed call of ``interleaved_runs``. An OpenMP runtime's workers (PyTorch's, faiss's)
# keep spinning for milliseconds after a parallel region (measured here: a 1.8 ms search right after a
# torch.mm took 2.5-3.1 ms, after a 20 ms pause 1.8 ms), so without it every candidate would pay for the
# one timed before it, and which one that is depends only on the order of the list.
SETTLE_SECONDS = 0.05


def interleaved_runs(
    fns: dict[str, Callable[[], object]], device: torch.device, *, rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds of ``rounds`` calls of each of ``fns``, taken in turn (a, b, c, a, b, c, ...) after
    ``warmup`` untimed calls each, so a change in machine load hits every candidate alike; each timed
    call starts ``SETTLE_SECONDS`` after the previous one ended."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(SETTLE_SECONDS)
            samples[name].append(time_call(fn, device))
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


# --------------------------------------------------------------------------------------------- memory

_LIBC: ctypes.CDLL | None = None
_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _libc() -> ctypes.CDLL | None:
    global _LIBC
    if _LIBC is None and platform.system() == "Linux":
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _LIBC = None
    return _LIBC


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the OS (``malloc_trim(0)``)."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _status_kib(field: str) -> int:
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_tracking_available() -> bool:
    """Whether the CPU method works here (Linux with a writable ``/proc/self/clear_refs``)."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False
    except KeyError:
        return False


def peak_memory_bytes(fn: Callable[[], T], device: torch.device | None = None) -> tuple[T, int | None]:
    """Run ``fn()`` once; return its result and the peak memory the call added, in bytes.

    ``device`` defaults to :func:`bench_device`. On CUDA: peak allocated tensor memory above what was
    allocated before the call. On CPU: growth of the process RSS high-water mark (see module
    docstring); ``None`` where ``/proc/self/clear_refs`` is unavailable.
    """
    device = bench_device() if device is None else device
    if device.type == "cuda":
        sync(device)
        release_free_memory()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        sync(device)
        return result, torch.cuda.max_memory_allocated(device) - before

    release_free_memory()
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except (OSError, KeyError):
        return fn(), None
    result = fn()
    peak = _status_kib("VmHWM")
    return result, max(0, peak - before) * 1024


# --------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (falls back to ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines(device: torch.device) -> list[str]:
    """A few lines describing the machine and software a benchmark ran on."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    from kernels import _dispatch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    else:
        dev = "cpu"
    path = "Triton kernels" if _dispatch.use_triton(device) else "vectorised PyTorch path"
    search = _dispatch.nearest_code_path(device)
    if search in ("native", "faiss"):
        path += f" (nearest_code: {'compiled kernel' if search == 'native' else 'faiss'})"
    lines = [
        f"CPU     : {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        f"software: Python {platform.python_version()}, torch {torch.__version__}, triton {triton_version}",
        f"device  : {dev}; kernels run the {path}",
    ]
    if _dispatch.interpreting():
        lines.append("WARNING : TRITON_INTERPRET=1 is set; Triton runs interpreted and timings are meaningless")
    return lines
