"""What every quantizer shares: the output type, the channel-first layout, fp32 math, usage metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    """Result of a quantizer's forward pass.

    Attributes:
        quantized: fp32, the input's shape ``[B, C, H, W]`` / ``[B, C, T, H, W]``; its values are the
            codes, its gradient flows straight through to the input.
        indices: int64 ``[B, H, W]`` / ``[B, T, H, W]`` (residual quantizers: a trailing depth axis).
        loss: scalar to add to the training loss (commitment, codebook, entropy terms).
        metrics: detached scalars for logging: ``perplexity``, ``usage`` (fraction of codes used in the
            batch), and quantizer-specific ones such as ``dead_codes``.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class: maps channel-first latents to codes from a vocabulary of ``codebook_size``."""

    codebook_size: int
    dim: int  # channels C of the input

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Channel-first fp32 codes ``[B, C, ...]`` for ``indices [B, ...]`` (as ``forward`` returns)."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be [B, C, H, W] or [B, C, T, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.dim:
            raise ValueError(
                f"x has {x.shape[1]} channels but {type(self).__name__} was built for dim={self.dim} "
                f"(input shape {tuple(x.shape)}; channels come first)"
            )


def to_rows(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, *S]`` -> fp32 rows ``[B * prod(S), C]`` (channel-last, row-major over B and S)."""
    return x.float().movedim(1, -1).reshape(-1, x.shape[1])


def from_rows(rows: torch.Tensor, like_shape: torch.Size) -> torch.Tensor:
    """Inverse of ``to_rows`` for an input of shape ``like_shape`` (channels may differ)."""
    batch, spatial = like_shape[0], like_shape[2:]
    return rows.reshape(batch, *spatial, rows.shape[-1]).movedim(-1, 1)


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Run quantization in fp32 even inside an autocast region."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def straight_through(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Values of ``codes``, gradient of the identity with respect to ``z``."""
    return z + (codes - z).detach()


def usage_metrics(indices: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Perplexity ``exp(H(p))`` of the batch's code histogram and the fraction of codes it uses.

    Negative indices (dropped depths, non-finite latents) are not counted.
    """
    flat = indices.reshape(-1)
    counts = torch.bincount(flat[flat >= 0], minlength=codebook_size).float()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return {"perplexity": entropy.exp(), "usage": (counts > 0).float().mean()}


def projection(dim_in: int, dim_out: int) -> nn.Module:
    """A linear map between latent and codebook channels, or the identity when they agree."""
    return nn.Identity() if dim_in == dim_out else nn.Linear(dim_in, dim_out)
