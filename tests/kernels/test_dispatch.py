"""Which path a call takes: CUDA -> Triton, CPU -> PyTorch (Triton when interpreting), env override."""

from __future__ import annotations

import importlib.util

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
    with pytest.raises(ValueError, match="TOKENIZER_KERNELS must be one of triton, native, faiss, torch"):
        kernels.fsq_quantize(torch.randn(3, 2), (5, 5))


def test_interpreter_widens_bfloat16_only_when_interpreting():
    t = torch.randn(3, dtype=torch.bfloat16)
    widened = _dispatch.interpretable(t)
    assert widened.dtype == (torch.float32 if _dispatch.interpreting() else torch.bfloat16)
    assert torch.equal(widened.float(), t.float())


def test_cpu_nearest_code_prefers_the_compiled_kernel_then_faiss(monkeypatch):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    for built in (True, False):
        for installed in (True, False):
            monkeypatch.setattr(_dispatch, "HAS_CPU_KERNELS", built)
            monkeypatch.setattr(_dispatch, "HAS_FAISS", installed)
            assert _dispatch.use_native(CPU) == built
            assert _dispatch.use_faiss(CPU) == (installed and not built)
            assert not _dispatch.use_native(torch.device("cuda")) and not _dispatch.use_faiss(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_CPU_KERNELS", True)
    monkeypatch.setattr(_dispatch, "HAS_FAISS", True)
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "faiss")
    assert not _dispatch.use_native(CPU) and _dispatch.use_faiss(CPU)
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "torch")
    assert not _dispatch.use_native(CPU) and not _dispatch.use_faiss(CPU)


def test_forced_faiss_needs_faiss_and_cpu(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "faiss")
    assert not _dispatch.use_triton(CPU) and not _dispatch.use_triton(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_FAISS", False)
    with pytest.raises(RuntimeError, match="pip install faiss-cpu"):
        kernels.nearest_code(torch.randn(3, 2), torch.randn(4, 2))
    monkeypatch.setattr(_dispatch, "HAS_FAISS", True)
    with pytest.raises(RuntimeError, match="tensors are on cuda"):
        _dispatch.use_faiss(torch.device("cuda"))


def test_forced_native_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "native")
    assert not _dispatch.use_triton(CPU) and not _dispatch.use_triton(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_CPU_KERNELS", True)
    with pytest.raises(RuntimeError, match="tensors are on cuda"):
        _dispatch.use_native(torch.device("cuda"))
    monkeypatch.setattr(_dispatch, "HAS_CPU_KERNELS", False)
    built = importlib.util.find_spec("kernels.cpu_impl._nearest_code") is not None
    reason = "neither AVX-512 nor AVX2" if built else "not built"
    with pytest.raises(
        RuntimeError, match=f"TOKENIZER_KERNELS=native but the compiled CPU kernel cannot run: .*{reason}"
    ):
        kernels.nearest_code(torch.randn(3, 2), torch.randn(4, 2))


def test_compiled_kernel_reports_what_this_cpu_runs():
    if not _dispatch.HAS_CPU_KERNELS:
        pytest.skip("the compiled CPU kernel is not built here (or the CPU lacks AVX2+FMA)")
    from kernels.cpu_impl import nearest_code as cpu_nearest_code

    assert set(_dispatch.CPU_KERNEL_ISAS) <= {"avx512", "avx2"} and "avx2" in _dispatch.CPU_KERNEL_ISAS
    assert cpu_nearest_code.ISA == _dispatch.CPU_KERNEL_ISAS[0]
    with pytest.raises(ValueError, match="no kernel for instruction set 'sse2'"):
        cpu_nearest_code._nearest_code.search("sse2", 0, 1, 0, 1, 1, False, 0, 0, 1)
    with pytest.raises(ValueError, match="need n >= 0, k >= 1"):
        cpu_nearest_code._nearest_code.search("avx2", 0, 1, 0, 0, 1, False, 0, 0, 1)
