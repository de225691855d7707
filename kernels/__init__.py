"""Fused kernels for discrete tokenizers: nearest-code search, EMA codebook update, FSQ.

Every op has a Triton kernel (CUDA, or CPU through ``TRITON_INTERPRET=1``), a vectorised PyTorch
path, and a plain definition in ``kernels.reference`` that both are tested against; ``nearest_code``
also has a compiled CPU kernel (``cpu_impl``) and a faiss path, tested the same way.
"""

from .ema_update import codebook_stats, ema_apply_, ema_update_
from .fsq import fsq_indices_to_codes, fsq_quantize
from .nearest_code import nearest_code

__all__ = ["codebook_stats", "ema_apply_", "ema_update_", "fsq_indices_to_codes", "fsq_quantize", "nearest_code"]
