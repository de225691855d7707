"""Residual quantization (Zeghidour et al. 2021, SoundStream; Lee et al. 2022, RQ-VAE).

Depth ``M`` quantizers applied in turn to what the previous ones left:
``r_0 = z``, ``c_m = s_m * Q_m(r_m / s_m)``, ``r_{m+1} = r_m - c_m``; the output is ``sum_m c_m``
with a straight-through gradient to ``z``. Indices gain a trailing depth axis ``[..., M]``.

- VQ depths (``VQConfig``): separate codebooks, or one shared by all depths; ``s_m = 1``.
- FSQ depths (``FSQConfig``): the residual shrinks by about one quantization step per depth, so
  depth ``m`` works at scale ``s_m = (L - 1)^-m`` per channel (as residual FSQ does); projections to
  ``len(levels)`` channels, when needed, sit around the whole stack.
- ``quantize_dropout``: in training, with this probability only the first ``n ~ U{1..M}`` depths run
  (the rest get index -1), so the tokens degrade gracefully when truncated. The draw comes from the
  global RNG (reproducible under ``torch.manual_seed``, so a resumed trainer draws the same depths);
  under torch.distributed every rank takes rank 0's draw, so all ranks run the same depths and make
  the same collectives (VQ depths all-reduce their statistics).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from .. import _distributed
from .base import Quantizer, QuantizerOutput, fp32, from_rows, projection, straight_through, to_rows, usage_metrics
from .fsq import FSQ, FSQConfig
from .vq import VectorQuantizer, VQConfig


@dataclass(frozen=True)
class ResidualConfig:
    quantizer: VQConfig | FSQConfig  # the quantizer at each depth
    depth: int = 4
    shared_codebook: bool = False  # VQ only: one codebook for all depths
    quantize_dropout: float = 0.0  # probability of truncating the depth during training

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be at least 1, got {self.depth}")
        if not 0.0 <= self.quantize_dropout <= 1.0:
            raise ValueError(f"quantize_dropout must lie in [0, 1], got {self.quantize_dropout}")
        if self.shared_codebook and not isinstance(self.quantizer, VQConfig):
            raise ValueError("shared_codebook applies to VQ depths only (FSQ has no learned codebook)")


class ResidualQuantizer(Quantizer):
    def __init__(self, config: ResidualConfig) -> None:
        super().__init__()
        self.config = config
        inner = config.quantizer
        if isinstance(inner, FSQConfig):
            levels = inner.resolved_levels()
            self.dim = inner.dim or len(levels)
            width = len(levels)
            make = functools.partial(FSQ, FSQConfig(levels=levels))
            step = torch.tensor(levels, dtype=torch.float32) - 1.0
            scales = torch.stack([step ** (-m) for m in range(config.depth)])
        elif isinstance(inner, VQConfig):
            self.dim = width = inner.dim
            make = functools.partial(VectorQuantizer, inner)
            scales = torch.ones(config.depth, width)
        else:
            raise TypeError(f"quantizer must be a VQConfig or FSQConfig, got {type(inner).__name__}")
        self.in_proj = projection(self.dim, width)
        self.out_proj = projection(width, self.dim)
        self.layers = nn.ModuleList([make() for _ in range(1 if config.shared_codebook else config.depth)])
        self.codebook_size = self.layers[0].codebook_size
        self.register_buffer("scales", scales, persistent=False)

    def layer(self, m: int) -> Quantizer:
        return self.layers[0 if self.config.shared_codebook else m]

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        self.check_input(x)
        depth = self.config.depth
        active = self._active_depth(x.device)
        with fp32(x.device):
            z = from_rows(self.in_proj(to_rows(x)), x.shape)
            residual, total = z, torch.zeros_like(z)
            loss = torch.zeros((), device=x.device)
            indices = []
            for m in range(depth):
                if m >= active:
                    indices.append(torch.full_like(indices[0], -1))
                    continue
                scale = self.scales[m].view(1, -1, *([1] * (x.ndim - 2)))
                out = self.layer(m)(residual / scale)
                codes = out.quantized.detach() * scale
                total = total + codes
                residual = residual - codes
                loss = loss + out.loss
                indices.append(out.indices)
            quantized = from_rows(self.out_proj(to_rows(straight_through(z, total))), x.shape)
        stacked = torch.stack(indices, dim=-1)
        summary = usage_metrics(stacked, self.codebook_size)
        summary["active_depth"] = torch.tensor(float(active))
        if isinstance(self.layers[0], VectorQuantizer):
            summary["dead_codes"] = sum(layer.dead_codes() for layer in self.layers)
        return QuantizerOutput(quantized, stacked, loss, summary)

    def _active_depth(self, device: torch.device) -> int:
        """Depths this call runs: all of them, except in training with ``quantize_dropout``, where with that
        probability it is ``n ~ U{1..M}``. Under torch.distributed rank 0's draw is broadcast (as a tensor on
        ``device``, which NCCL can send), since ranks seed their global RNGs differently."""
        depth, p = self.config.depth, self.config.quantize_dropout
        if not self.training or p == 0:
            return depth
        active = int(torch.randint(1, depth + 1, ())) if torch.rand(()) < p else depth
        if _distributed.is_distributed():
            active = int(_distributed.broadcast_(torch.tensor([active], device=device))[0])
        return active

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, C, ...]`` summed over depths of ``indices [B, ..., M]``; index -1 adds nothing."""
        if indices.shape[-1] != self.config.depth:
            raise ValueError(f"indices must end with a depth axis of {self.config.depth}, got {tuple(indices.shape)}")
        with fp32(indices.device):
            total = 0.0
            for m in range(self.config.depth):
                idx = indices[..., m]
                scale = self.scales[m].view(1, -1, *([1] * (idx.ndim - 1)))
                keep = (idx >= 0).unsqueeze(1)
                total = total + self.layer(m).indices_to_codes(idx.clamp_min(0)) * scale * keep
            rows = self.out_proj(to_rows(total))
            return from_rows(rows, total.shape)
