"""Kernel-test fixtures.

``path`` parametrises a test over every (backend, device) this process can run:
- a normal process: the PyTorch path on CPU (+ both paths on CUDA when present), and in modules that set
  ``CPU_SEARCH_PATHS = True`` (nearest_code) the compiled CPU kernel for every instruction set this CPU
  runs (AVX-512, AVX2) where it is built, and faiss on CPU when it is installed;
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
    backend: str  # "torch", "triton", "native" or "faiss"
    device: torch.device
    isa: str = ""  # the compiled kernel's instruction set ("native" only)

    def __str__(self) -> str:
        return "-".join(filter(None, (self.backend, self.isa, self.device.type)))


def _paths(cpu_search: bool) -> list[Path]:
    if _dispatch.interpreting():
        return [Path("triton", torch.device("cpu"))]
    paths = [Path("torch", torch.device("cpu"))]
    if cpu_search:
        paths += [Path("native", torch.device("cpu"), isa) for isa in _dispatch.CPU_KERNEL_ISAS]
        if _dispatch.HAS_FAISS:
            paths.append(Path("faiss", torch.device("cpu")))
    if torch.cuda.is_available():
        paths += [Path("torch", torch.device("cuda")), Path("triton", torch.device("cuda"))]
    return paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``path``; a test module with ``CPU_SEARCH_PATHS = True`` also gets the compiled CPU
    kernel (each instruction set) and faiss."""
    if "path" in metafunc.fixturenames:
        paths = _paths(cpu_search=getattr(metafunc.module, "CPU_SEARCH_PATHS", False))
        metafunc.parametrize("path", paths, ids=str, indirect=True)


@pytest.fixture
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(_dispatch.BACKEND_ENV, request.param.backend)
    if request.param.isa:
        import kernels.cpu_impl.nearest_code as cpu_nearest_code

        monkeypatch.setattr(cpu_nearest_code, "ISA", request.param.isa)
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
