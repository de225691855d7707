"""Chooses the implementation of a kernel call: Triton or the vectorised PyTorch path.

- CUDA tensors run the Triton kernels.
- CPU tensors run the PyTorch path, unless ``TRITON_INTERPRET=1`` was set when the process started:
  then the Triton kernels run through Triton's interpreter (how CI covers them without a GPU).
- ``TOKENIZER_KERNELS=triton|torch`` forces a path (``torch`` also works on CUDA tensors).
"""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

BACKEND_ENV = "TOKENIZER_KERNELS"


def interpreting() -> bool:
    """True when Triton kernels run through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(device: torch.device) -> bool:
    """Whether a call on tensors living on ``device`` should take the Triton path."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced not in ("", "triton", "torch"):
        raise ValueError(f"{BACKEND_ENV} must be 'triton' or 'torch', got {forced!r}")
    if forced == "torch":
        return False
    runnable = HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and interpreting()))
    if forced == "triton" and not runnable:
        reason = "triton is not installed" if not HAS_TRITON else f"tensors are on {device}"
        raise RuntimeError(
            f"{BACKEND_ENV}=triton but the Triton path cannot run: {reason}; it needs CUDA tensors, "
            "or CPU tensors with TRITON_INTERPRET=1 set before the process started"
        )
    return runnable


def interpretable(t: torch.Tensor) -> torch.Tensor:
    """Triton's interpreter has no bfloat16: widen such tensors to fp32 (exactly) when interpreting."""
    if interpreting() and t.device.type == "cpu" and t.dtype == torch.bfloat16:
        return t.float()
    return t
