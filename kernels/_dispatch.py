"""Chooses the implementation of a kernel call: Triton or the vectorised PyTorch path.

- CUDA tensors run the Triton kernels.
- CPU tensors run the PyTorch path, unless ``TRITON_INTERPRET=1`` was set when the process started:
  then the Triton kernels run through Triton's interpreter (how CI covers them without a GPU).
- ``TOKENIZER_KERNELS=triton|torch|faiss`` forces a path (``torch`` also works on CUDA tensors).
- ``nearest_code`` on CPU runs faiss's exact k=1 search when faiss is installed (``faiss-cpu``), at every
  shape; without faiss the PyTorch path. ``faiss`` forces faiss (an error where it cannot run), ``torch``
  the PyTorch path (other ops have no faiss path and run PyTorch).

Why faiss at every D. Measured on 2 quiet cores (AMD EPYC, faiss 1.15.1, torch 2.13, 2 interleaved rounds,
``benchmarks/report.py --nearest``; RESULTS.md): the PyTorch path was slower than faiss's IndexFlat search at
27 of the 30 measured shapes with D >= 64 (ours/faiss 0.86-2.4), so no shape rule pays; at small D faiss's
fused k=1 kernel never writes a distance to memory and no matmul-then-argmin program comes close.

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

BACKEND_ENV = "TOKENIZER_KERNELS"


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(device: torch.device) -> bool:
    """Whether a call on tensors living on ``device`` should take the Triton path."""
    forced = _forced()
    if forced in ("torch", "faiss"):
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
    if forced not in ("", "triton", "torch", "faiss"):
        raise ValueError(f"{BACKEND_ENV} must be 'triton', 'torch' or 'faiss', got {forced!r}")
    return forced


def use_faiss(device: torch.device) -> bool:
    """Whether a ``nearest_code`` call on ``device`` that does not take the Triton path runs faiss:
    CPU tensors with faiss installed, unless ``TOKENIZER_KERNELS=torch``."""
    forced = _forced()
    if forced == "faiss" and not (HAS_FAISS and device.type == "cpu"):
        reason = "faiss is not installed (pip install faiss-cpu)" if not HAS_FAISS else f"tensors are on {device}"
        raise RuntimeError(f"{BACKEND_ENV}=faiss but the faiss path cannot run: {reason}; it needs CPU tensors")
    return HAS_FAISS and device.type == "cpu" and forced in ("", "faiss")


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
