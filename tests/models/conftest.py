"""The models' tests use tiny networks: every test runs on one intra-op thread (see tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Applies the shared ``one_thread`` fixture to every test in this folder."""
