"""``memory_limit``: make an allocation above a bound fail at once inside a test, instead of growing the process
until the machine's OOM killer ends the whole test run.

The bound is on the address space (``RLIMIT_AS``): while the block runs, the process may map at most
``extra_bytes`` more than it had mapped when the block began. A bigger allocation raises ``MemoryError``
(Python) or ``RuntimeError`` (torch's allocator), which the test then reports. Linux only (it reads
``/proc/self/statm``); elsewhere the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

MiB = 2**20


def mapped_bytes() -> int:
    """The process's current virtual size (``/proc/self/statm``, first field, in pages)."""
    return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def memory_limit(extra_bytes: int) -> Iterator[None]:
    """Within the block, allow at most ``extra_bytes`` of new address space (see the module docstring)."""
    if not Path("/proc/self/statm").is_file():
        pytest.skip("memory_limit reads /proc/self/statm (Linux)")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped_bytes() + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
