"""Shared test settings: deterministic seeds for every test; ``intra_op_threads`` for tiny-model tests."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks run as fast on one intra-op thread, and are immune to a busy machine (oversubscribed
    OpenMP threads slow them down tenfold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
