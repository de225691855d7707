"""The models' tests use tiny networks: one intra-op thread is as fast, and immune to a busy machine
(oversubscribed OpenMP threads slow these tests down tenfold)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
