"""Chooses the implementation of a kernel call: Triton or the vectorised PyTorch path.

- CUDA tensors run the Triton kernels.
- CPU tensors run the PyTorch path, unless ``TRITON_INTERPRET=1`` was set when the process started:
  then the Triton kernels run through Triton's interpreter (how CI covers them without a GPU).
- ``TOKENIZER_KERNELS=triton|torch|faiss`` forces a path (``torch`` also works on CUDA tensors).
- ``nearest_code`` on CPU runs faiss's exact k=1 search when faiss is installed (``faiss-cpu``),
  except on wide searches (``D >= NEAREST_TORCH_MIN_DIM``), which run the PyTorch path; without faiss
  always the PyTorch path. ``faiss`` forces faiss at every
  shape, ``torch`` the PyTorch path (other ops have no faiss path and run PyTorch).

Why the shape rule. At small D faiss's k=1 search never writes a distance to memory (a fused SIMD
kernel) and is many times faster than any matmul-then-argmin program; measured here it stays far
ahead up to D = 32 (its time grows 5-7x from D = 32 to 64, the sign of a fused path ending). From
D = 64 on it runs sgemm into 4096 x 1024 blocks with its bundled BLAS, and torch's MKL ``addmm`` into
larger blocks is as fast or faster. Measured on 2 cores (Xeon, AVX-512, faiss 1.15.1,
torch 2.13 + MKL), best of interleaved runs, PyTorch / faiss time: quiet machine, D=256: 0.39
(N=16384 K=16384) and 0.44 (N=65536 K=1024); D=32: 1.2; D=8: 6.7. Under load (noisy, issue 17):
D=64 0.4-2.1, D=128 0.9-2.7, D=256 0.9-2.4, D <= 32 always > 2. The rule looks at D only, never at N or
K: splitting a batch then never switches path, so the rows of a part get the path of the whole (small
wide searches give up faiss's lower per-call cost, which is small against a training step). The constant
is the crossover of those figures; ``benchmarks/report.py --nearest`` re-measures the grid with both
sides as ``ours``/``faiss``.

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

# nearest_code on CPU with faiss installed takes the PyTorch path when D >= this.
NEAREST_TORCH_MIN_DIM = 64


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


def use_faiss(device: torch.device, shape: tuple[int, int, int] | None = None) -> bool:
    """Whether a ``nearest_code`` call on ``device`` that does not take the Triton path runs faiss:
    CPU tensors with faiss installed, unless ``TOKENIZER_KERNELS=torch``. Given the call's ``shape``
    ``(N, K, D)``, wide searches (``D >= NEAREST_TORCH_MIN_DIM``, whatever N and K) go to the PyTorch path
    (see the module notes) unless ``TOKENIZER_KERNELS=faiss``."""
    forced = _forced()
    if forced == "faiss" and not (HAS_FAISS and device.type == "cpu"):
        reason = "faiss is not installed (pip install faiss-cpu)" if not HAS_FAISS else f"tensors are on {device}"
        raise RuntimeError(f"{BACKEND_ENV}=faiss but the faiss path cannot run: {reason}; it needs CPU tensors")
    if not (HAS_FAISS and device.type == "cpu" and forced in ("", "faiss")):
        return False
    if forced == "faiss" or shape is None:
        return True
    return shape[2] < NEAREST_TORCH_MIN_DIM


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
