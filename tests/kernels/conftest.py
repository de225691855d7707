"""Kernel-test fixtures.

``path`` parametrises a test over every (backend, device) this process can run:
- a normal process: the PyTorch path on CPU (+ both paths on CUDA when present), and in modules that set
  ``FAISS_PATH = True`` (nearest_code) faiss on CPU when it is installed;
- a process started with ``TRITON_INTERPRET=1``: the Triton kernels on CPU through the interpreter.
``poisoned_empty`` (autouse) fills fresh ``torch.empty`` memory with NaN (floats) or -7 (integers),
so a kernel that forgets to write part of its output fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kernels import _dispatch


@dataclass(frozen=True)
class Path:
    backend: str  # "torch", "triton" or "faiss"
    device: torch.device

    def __str__(self) -> str:
        return f"{self.backend}-{self.device.type}"


def _paths(faiss: bool) -> list[Path]:
    if _dispatch.interpreting():
        return [Path("triton", torch.device("cpu"))]
    paths = [Path("torch", torch.device("cpu"))]
    if faiss and _dispatch.HAS_FAISS:
        paths.append(Path("faiss", torch.device("cpu")))
    if torch.cuda.is_available():
        paths += [Path("torch", torch.device("cuda")), Path("triton", torch.device("cuda"))]
    return paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``path``; a test module with ``FAISS_PATH = True`` also gets the faiss path."""
    if "path" in metafunc.fixturenames:
        paths = _paths(faiss=getattr(metafunc.module, "FAISS_PATH", False))
        metafunc.parametrize("path", paths, ids=str, indirect=True)


@pytest.fixture
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(_dispatch.BACKEND_ENV, request.param.backend)
    return request.param


_real_empty = torch.empty
_real_empty_like = torch.empty_like


def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    if t.dtype != torch.bool and not t.dtype.is_complex:
        return t.fill_(-7)
    return t


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(_real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(_real_empty_like(*a, **k)))
