"""Quantizers on the fused kernels: VQ, FSQ, LFQ, residual RQ and Gumbel, sharing one output contract.

Input channel-first ``[B, C, H, W]`` or ``[B, C, T, H, W]``; ``forward`` returns a
``QuantizerOutput(quantized, indices, loss, metrics)``; quantization runs in fp32, also under autocast.
"""

from __future__ import annotations

from .base import Quantizer, QuantizerOutput
from .fsq import FSQ, FSQ_PRESETS, FSQConfig
from .gumbel import GumbelConfig, GumbelQuantizer
from .lfq import LFQ, LFQConfig
from .residual import ResidualConfig, ResidualQuantizer
from .vq import VectorQuantizer, VQConfig

QuantizerConfig = VQConfig | FSQConfig | LFQConfig | ResidualConfig | GumbelConfig


def build_quantizer(config: QuantizerConfig) -> Quantizer:
    """The quantizer a config describes."""
    builders = {
        VQConfig: VectorQuantizer,
        FSQConfig: FSQ,
        LFQConfig: LFQ,
        ResidualConfig: ResidualQuantizer,
        GumbelConfig: GumbelQuantizer,
    }
    if type(config) not in builders:
        raise TypeError(f"config must be one of {[c.__name__ for c in builders]}, got {type(config).__name__}")
    return builders[type(config)](config)


__all__ = [
    "FSQ",
    "FSQ_PRESETS",
    "LFQ",
    "FSQConfig",
    "GumbelConfig",
    "GumbelQuantizer",
    "LFQConfig",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "ResidualConfig",
    "ResidualQuantizer",
    "VQConfig",
    "VectorQuantizer",
    "build_quantizer",
]
