"""Gumbel-softmax quantization (Jang et al. 2016, arXiv:1611.01144), as in taming-transformers' ``GumbelVQ``.

A linear map ``proj`` turns each latent ``z`` (``dim`` channels) into logits ``l = W z + b`` over the
``codebook_size`` codes ``e_k`` (rows of ``embed``).

- Inference (eval mode): ``k = argmax_k l_k`` and the code is ``e_k``; no noise, so encoding is deterministic
  (taming's ``GumbelQuantize.forward`` draws the noise in eval mode too; this is its noise-free assignment).
- Training: with Gumbel noise ``g_k = -log(-log u_k)``, ``u_k ~ U(0, 1)``, the soft assignment is
  ``y = softmax((l + g) / temperature)`` and ``k = argmax_k (l_k + g_k)``. With ``straight_through`` the output
  is ``e_k``, the logits getting the gradient of ``sum_k y_k e_k`` (hard Gumbel-softmax, as in eval mode with
  ``y = softmax(l / temperature)``); without, it is ``sum_k y_k e_k``.

Loss (both modes): ``kl_weight * mean_n sum_k q_nk log(K q_nk + 1e-10)`` with ``q_n = softmax(l_n)``, the KL
divergence from the uniform prior over the ``K`` codes, which keeps the code usage spread out.

The logits are laid out channel-first (``[B, K, ...]``, contiguous) before the noise is drawn, so with the same
random state the noise, and hence the training-mode indices, match taming's ``GumbelQuantize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Quantizer, QuantizerOutput, fp32, from_rows, to_rows, usage_metrics

KL_CHUNK_ELEMENTS = 1 << 22  # logits per piece of the inference-time KL (16 MiB of fp32)


@dataclass(frozen=True)
class GumbelConfig:
    codebook_size: int  # K, the vocabulary
    dim: int  # channels of the latents fed in, and of the codes given out
    temperature: float = 1.0  # tau of the training-time Gumbel-softmax (taming anneals it from 1.0)
    kl_weight: float = 5e-4  # weight of KL(softmax(logits) || uniform); taming's GumbelVQ passes 1e-8
    straight_through: bool = True  # training output: hard code with the soft gradient (True) or the soft mix

    def __post_init__(self) -> None:
        for name in ("codebook_size", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")


class GumbelQuantizer(Quantizer):
    """Logits ``proj(z)`` over the codes, argmax at inference, Gumbel-softmax in training (module docstring)."""

    def __init__(self, config: GumbelConfig) -> None:
        super().__init__()
        self.config = config
        self.codebook_size = config.codebook_size
        self.dim = config.dim
        self.proj = nn.Linear(config.dim, config.codebook_size)
        self.embed = nn.Embedding(config.codebook_size, config.dim)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-first fp32 logits ``[B, K, ...]`` (contiguous) of latents ``x [B, dim, ...]``."""
        self.check_input(x)
        with fp32(x.device):
            rows = F.linear(to_rows(x), self.proj.weight.float(), self.proj.bias.float())
            return from_rows(rows, x.shape).contiguous()

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        logits = self.logits(x)
        with fp32(x.device):
            kl = self._kl(logits)
            soft = None
            if self.training:
                soft = F.gumbel_softmax(logits, tau=self.config.temperature, hard=False, dim=1)
                index = soft.argmax(dim=1)
            else:
                index = logits.argmax(dim=1)
                if torch.is_grad_enabled():  # the straight-through mix below needs it; inference does not
                    soft = F.softmax(logits / self.config.temperature, dim=1)
            codebook = self.embed.weight.float()
            if self.training and not self.config.straight_through:
                quantized = torch.einsum("bk...,kd->bd...", soft, codebook)
            else:  # the hard code's values; the logits get the soft mix's gradient, the codebook the hard one's
                quantized = self.indices_to_codes(index)
                if torch.is_grad_enabled():  # (no [B, K, ...] mix to build for inference)
                    mix = torch.einsum("bk...,kd->bd...", soft, codebook.detach())
                    quantized = quantized + (mix - mix.detach())
        metrics = usage_metrics(index, self.codebook_size)
        return QuantizerOutput(quantized, index, self.config.kl_weight * kl, metrics)

    def _kl(self, logits: torch.Tensor) -> torch.Tensor:
        """``mean_n sum_k q_nk log(K q_nk + 1e-10)``, ``q_n = softmax(l_n)``, over logits ``[B, K, ...]``. Without
        autograd (inference) the ``[B, K, ...]``-sized temporaries are made for ``KL_CHUNK_ELEMENTS`` logits at
        a time, so an encode holds the logits and little more."""

        def summed(part: torch.Tensor) -> torch.Tensor:
            q = F.softmax(part, dim=1)
            return torch.sum(q * torch.log(q * self.codebook_size + 1e-10), dim=1)

        if (torch.is_grad_enabled() and logits.requires_grad) or logits.numel() == 0:  # (empty: NaN, as a mean)
            return summed(logits).mean()
        flat = logits.flatten(2)  # [B, K, positions], a view (the logits are contiguous)
        step = max(1, KL_CHUNK_ELEMENTS // (flat.shape[0] * flat.shape[1]))
        total = sum(summed(flat[:, :, p : p + step]).sum() for p in range(0, flat.shape[2], step))
        return total / (flat.shape[0] * flat.shape[2])

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        with fp32(indices.device):
            return F.embedding(indices, self.embed.weight.float()).movedim(-1, 1)
