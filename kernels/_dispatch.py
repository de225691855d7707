"""Chooses the implementation of a kernel call: Triton, a compiled CPU kernel, faiss or PyTorch.

- CUDA tensors run the Triton kernels.
- CPU tensors run the PyTorch path, unless ``TRITON_INTERPRET=1`` was set when the process started:
  then the Triton kernels run through Triton's interpreter (how CI covers them without a GPU).
- ``nearest_code`` on CPU runs the compiled kernel (``cpu_impl``, AVX-512 or AVX2, built by ``pip
  install`` when a C++17 compiler is present); where it is not built or the CPU lacks AVX2+FMA, faiss's
  exact k=1 search when faiss is installed (``faiss-cpu``); else the PyTorch path.
- ``TOKENIZER_KERNELS=triton|native|faiss|torch`` forces a path (an error where it cannot run; ``torch``
  also works on CUDA tensors; ops without a native or faiss path run PyTorch then).

Why the compiled kernel first. Measured on 2 cores (AMD EPYC, faiss 1.15.1, ``benchmarks/report.py
--nearest``; RESULTS.md) it took 0.03-0.91 of faiss's IndexFlat search time at every point of issue 17's
grid (both metrics), and faiss beat the PyTorch path at 27 of 30 shapes with D >= 64 and by far more at
small D.

Every Triton launch runs inside ``device_guard(tensor)``: Triton launches on the *current* CUDA device,
which need not be the one the tensors live on (``cuda:1`` tensors while ``cuda:0`` is current).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

# Looked up, not imported: faiss (and its own OpenMP runtime) loads only when a call takes its path.
HAS_FAISS = importlib.util.find_spec("faiss") is not None

BACKENDS = ("triton", "native", "faiss", "torch")


def _cpu_kernel_instruction_sets() -> tuple[str, ...]:
    try:
        from .cpu_impl import _nearest_code
    except ImportError:  # not built: no C++ compiler at install time, or not x86-64
        return ()
    return _nearest_code.instruction_sets()


# The compiled CPU kernels this machine can run (empty when not built or the CPU lacks AVX2+FMA).
CPU_KERNEL_ISAS = _cpu_kernel_instruction_sets()
HAS_CPU_KERNELS = bool(CPU_KERNEL_ISAS)

BACKEND_ENV = "TOKENIZER_KERNELS"


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(device: torch.device) -> bool:
    """Whether a call on tensors living on ``device`` should take the Triton path."""
    forced = _forced()
    if forced in ("native", "faiss", "torch"):
        return False
    runnable = HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and interpreting()))
    if forced == "triton" and not runnable:
        reason = "triton is not installed" if not HAS_TRITON else f"tensors are on {device}"
        raise RuntimeError(
            f"{BACKEND_ENV}=triton but the Triton path cannot run: {reason}; it needs CUDA tensors, "
            "or CPU tensors with TRITON_INTERPRET=1 set before the process started"
        )
    return runnable


def _forced() -> str:
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced not in ("", *BACKENDS):
        raise ValueError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {forced!r}")
    return forced


def use_native(device: torch.device) -> bool:
    """Whether a ``nearest_code`` call on ``device`` that does not take the Triton path runs the compiled
    CPU kernel: CPU tensors where it is built and the CPU has AVX2+FMA, unless another path is forced."""
    forced = _forced()
    if forced == "native" and not (HAS_CPU_KERNELS and device.type == "cpu"):
        if device.type != "cpu":
            reason = f"tensors are on {device}; it needs CPU tensors"
        elif importlib.util.find_spec("kernels.cpu_impl._nearest_code") is None:
            reason = "it is not built (reinstall with a C++17 compiler present: pip install -e .)"
        else:
            reason = "this CPU has neither AVX-512 nor AVX2 with FMA"
        raise RuntimeError(f"{BACKEND_ENV}=native but the compiled CPU kernel cannot run: {reason}")
    return HAS_CPU_KERNELS and device.type == "cpu" and forced in ("", "native")


def use_faiss(device: torch.device) -> bool:
    """Whether a ``nearest_code`` call on ``device`` that takes neither the Triton path nor the compiled
    kernel runs faiss: CPU tensors with faiss installed, unless another path is forced."""
    forced = _forced()
    if forced == "faiss" and not (HAS_FAISS and device.type == "cpu"):
        reason = "faiss is not installed (pip install faiss-cpu)" if not HAS_FAISS else f"tensors are on {device}"
        raise RuntimeError(f"{BACKEND_ENV}=faiss but the faiss path cannot run: {reason}; it needs CPU tensors")
    return HAS_FAISS and device.type == "cpu" and (forced == "faiss" or (forced == "" and not HAS_CPU_KERNELS))


def nearest_code_path(device: torch.device) -> str:
    """The path ``kernels.nearest_code`` takes for tensors on ``device``: "triton", "native", "faiss" or
    "torch", in that order of preference."""
    if use_triton(device):
        return "triton"
    if use_native(device):
        return "native"
    return "faiss" if use_faiss(device) else "torch"


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context in which ``t``'s CUDA device is the current one, for a Triton launch on ``t``.
    A no-op for CPU tensors (the interpreter): no CUDA call is made."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def interpretable(t: torch.Tensor) -> torch.Tensor:
    """Triton's interpreter has no bfloat16: widen such tensors to fp32 (exactly) when interpreting."""
    if interpreting() and t.device.type == "cpu" and t.dtype == torch.bfloat16:
        return t.float()
    return t
