"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2, arXiv:2310.05737).

Each of ``d`` channels is quantized to its sign, ``q_i = +1 if z_i > 0 else -1``: ``2^d`` codes with
no lookup; ``index = sum_i [z_i > 0] 2^i``. Straight-through gradient.

Entropy regulariser. With the code distribution ``p(c | z) = softmax_c(-||z - c||^2 / tau)`` over
all ``c in {-1, 1}^d``, the loss is ``entropy_weight * (E_n[H(p(. | z_n))] - diversity_gamma *
H(E_n[p(. | z_n)]))``: confident assignments, diverse usage. Because ``||c||^2 = d`` is constant,
``p(c | z)`` factorises over bits: ``p(c_i = +1 | z) = sigmoid(u_i)``, ``u_i = 4 z_i / tau``. Hence

- the per-sample entropy is a sum of ``d`` binary entropies (no ``2^d`` axis at all);
- the mean distribution over the ``2^d`` codes, split into a low and a high group of bits, is
  ``a[k_lo, k_hi] = (1/N) sum_n P_lo[n, k_lo] P_hi[n, k_hi] = (P_lo^T P_hi / N)``, one matmul of two
  ``N x 2^(d/2)`` tables. Memory is ``O(N 2^(d/2) + 2^d)`` instead of ``O(N 2^d)``: d = 18 over
  16,384 positions needs ~70 MB where the direct N x 2^d matrix needs 16 GiB. It is exact, not a
  bound, and autograd differentiates it as written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Quantizer, QuantizerOutput, fp32, from_rows, projection, straight_through, to_rows, usage_metrics


@dataclass(frozen=True)
class LFQConfig:
    dim: int  # channels of the latents
    codebook_bits: int | None = None  # d, so 2^d codes; None: dim (no projections)
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0  # weight of the codebook entropy inside the entropy term
    temperature: float = 0.01  # tau of the soft assignment used only by the entropy term

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be at least 1, got {self.dim}")
        bits = self.codebook_bits or self.dim
        if not 1 <= bits <= 30:
            raise ValueError(f"codebook_bits must lie in [1, 30], got {bits}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def _bit_table(bits: int, device: torch.device) -> torch.Tensor:
    """[2^bits, bits] fp32 table of 0/1: row k holds the bits of k, least significant first."""
    k = torch.arange(2**bits, device=device)
    return ((k[:, None] >> torch.arange(bits, device=device)) & 1).float()


def _group_probabilities(u: torch.Tensor) -> torch.Tensor:
    """``P[n, k] = prod_i p(bit_i = bit_i(k) | n)`` for the bits in ``u [N, b]`` (logits of bit = 1)."""
    table = _bit_table(u.shape[1], u.device)
    log_p = -(F.softplus(-u) @ table.T + F.softplus(u) @ (1.0 - table).T)
    return log_p.exp()


def entropy_terms(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-sample entropy and codebook entropy of the soft code assignment of ``z [N, d]``."""
    u = 4.0 * z / temperature
    p = torch.sigmoid(u)
    per_sample = (p * F.softplus(-u) + (1.0 - p) * F.softplus(u)).sum(1).mean()
    low_bits = z.shape[1] // 2
    avg = _group_probabilities(u[:, :low_bits]).T @ _group_probabilities(u[:, low_bits:]) / z.shape[0]
    codebook = -(avg * avg.clamp_min(1e-30).log()).sum()
    return per_sample, codebook


class LFQ(Quantizer):
    def __init__(self, config: LFQConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.bits = config.codebook_bits or config.dim
        self.codebook_size = 2**self.bits
        self.in_proj = projection(self.dim, self.bits)
        self.out_proj = projection(self.bits, self.dim)
        self.register_buffer("powers", 2 ** torch.arange(self.bits), persistent=False)

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        self.check_input(x)
        cfg = self.config
        with fp32(x.device):
            z = self.in_proj(to_rows(x))
            positive = z > 0
            codes = torch.where(positive, 1.0, -1.0)
            loss = cfg.commitment_weight * F.mse_loss(z, codes)
            metrics = {}
            if self.training and cfg.entropy_weight > 0 and z.shape[0] > 0:
                per_sample, codebook = entropy_terms(z, cfg.temperature)
                loss = loss + cfg.entropy_weight * (per_sample - cfg.diversity_gamma * codebook)
                metrics = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach()}
            quantized = from_rows(self.out_proj(straight_through(z, codes)), x.shape)
        indices = (positive.long() * self.powers).sum(1).view(x.shape[0], *x.shape[2:])
        metrics.update(usage_metrics(indices, self.codebook_size))
        return QuantizerOutput(quantized, indices, loss, metrics)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        with fp32(indices.device):
            bits = (indices.reshape(-1, 1) >> torch.arange(self.bits, device=indices.device)) & 1
            rows = self.out_proj(bits.float() * 2.0 - 1.0)
            return rows.reshape(*indices.shape, self.dim).movedim(-1, 1)
