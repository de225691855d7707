"""Which path a call takes: CUDA -> Triton, CPU -> PyTorch (Triton when interpreting), env override."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import _dispatch

CPU = torch.device("cpu")


def test_cpu_default_follows_the_interpreter(monkeypatch):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    assert _dispatch.use_triton(CPU) == (_dispatch.interpreting() and _dispatch.HAS_TRITON)


def test_cuda_default_is_triton(monkeypatch):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    assert _dispatch.use_triton(torch.device("cuda")) == _dispatch.HAS_TRITON


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_forced_torch(monkeypatch, device):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "torch")
    assert not _dispatch.use_triton(torch.device(device))


def test_forced_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "triton")
    if _dispatch.interpreting():
        assert _dispatch.use_triton(CPU)
    else:
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            kernels.nearest_code(torch.randn(3, 2), torch.randn(4, 2))


def test_unknown_backend(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match="TOKENIZER_KERNELS must be 'triton', 'torch' or 'faiss'"):
        kernels.fsq_quantize(torch.randn(3, 2), (5, 5))


def test_interpreter_widens_bfloat16_only_when_interpreting():
    t = torch.randn(3, dtype=torch.bfloat16)
    widened = _dispatch.interpretable(t)
    assert widened.dtype == (torch.float32 if _dispatch.interpreting() else torch.bfloat16)
    assert torch.equal(widened.float(), t.float())


def test_cpu_nearest_code_takes_faiss_when_installed(monkeypatch):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    for installed in (True, False):
        monkeypatch.setattr(_dispatch, "HAS_FAISS", installed)
        assert _dispatch.use_faiss(CPU) == installed
        assert not _dispatch.use_faiss(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_FAISS", True)
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "torch")
    assert not _dispatch.use_faiss(CPU)


def test_forced_faiss_needs_faiss_and_cpu(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "faiss")
    assert not _dispatch.use_triton(CPU) and not _dispatch.use_triton(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_FAISS", False)
    with pytest.raises(RuntimeError, match="pip install faiss-cpu"):
        kernels.nearest_code(torch.randn(3, 2), torch.randn(4, 2))
    monkeypatch.setattr(_dispatch, "HAS_FAISS", True)
    with pytest.raises(RuntimeError, match="tensors are on cuda"):
        _dispatch.use_faiss(torch.device("cuda"))


def test_cpu_nearest_code_takes_faiss_whenever_installed(monkeypatch):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    monkeypatch.setattr(_dispatch, "HAS_FAISS", True)
    assert _dispatch.use_faiss(CPU)
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "torch")
    assert not _dispatch.use_faiss(CPU)
    monkeypatch.setattr(_dispatch, "HAS_FAISS", False)
    monkeypatch.delenv(_dispatch.BACKEND_ENV)
    assert not _dispatch.use_faiss(CPU)
