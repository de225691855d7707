"""Finite scalar quantization (Mentzer et al. 2023, arXiv:2309.15505) as a quantizer module.

Each of ``len(levels)`` channels is bounded and rounded to one of ``L_i`` values
(``kernels.fsq_quantize``); the implicit codebook holds ``prod(levels)`` codes and needs no
learning, so the loss is zero. Linear projections map ``dim`` channels to ``len(levels)`` and back
when they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import kernels
from kernels._checks import check_levels

from .base import Quantizer, QuantizerOutput, fp32, from_rows, projection, to_rows, usage_metrics

# The FSQ paper's recommended levels for a target vocabulary (its Table 1).
FSQ_PRESETS: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}


@dataclass(frozen=True)
class FSQConfig:
    levels: tuple[int, ...] | None = None  # levels per channel; None: the preset for codebook_size
    codebook_size: int | None = None  # a key of FSQ_PRESETS, used when levels is None
    dim: int | None = None  # channels of the latents; None: len(levels) (no projections)

    def resolved_levels(self) -> tuple[int, ...]:
        if self.levels is not None:
            return check_levels(tuple(self.levels))
        if self.codebook_size not in FSQ_PRESETS:
            raise ValueError(
                f"give levels, or a codebook_size among the presets {sorted(FSQ_PRESETS)}; got {self.codebook_size}"
            )
        return FSQ_PRESETS[self.codebook_size]

    def __post_init__(self) -> None:
        self.resolved_levels()
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"dim must be at least 1, got {self.dim}")


class FSQ(Quantizer):
    def __init__(self, config: FSQConfig) -> None:
        super().__init__()
        self.config = config
        self.levels = config.resolved_levels()
        self.codebook_size = math.prod(self.levels)
        self.dim = config.dim or len(self.levels)
        self.in_proj = projection(self.dim, len(self.levels))
        self.out_proj = projection(len(self.levels), self.dim)

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        self.check_input(x)
        with fp32(x.device):
            codes, index = kernels.fsq_quantize(self.in_proj(to_rows(x)), self.levels)
            quantized = from_rows(self.out_proj(codes), x.shape)
        indices = index.view(x.shape[0], *x.shape[2:])
        loss = torch.zeros((), device=x.device)
        return QuantizerOutput(quantized, indices, loss, usage_metrics(indices, self.codebook_size))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        with fp32(indices.device):
            rows = self.out_proj(kernels.fsq_indices_to_codes(indices.reshape(-1), self.levels))
            return rows.reshape(*indices.shape, self.dim).movedim(-1, 1)
