"""Pixel reconstruction loss of a tokenizer: mean absolute or mean squared error."""

from __future__ import annotations

import torch

RECONSTRUCTION_KINDS = ("l1", "l2")


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean reconstruction error between the target ``x`` and the reconstruction ``x_hat``.

    With ``N`` the number of elements:
    ``l1``: ``(1/N) * sum |x - x_hat|``;  ``l2``: ``(1/N) * sum (x - x_hat)^2``.

    Args:
        x: target, any shape (pixels in ``[-1, 1]``, ``[B, C, H, W]`` or ``[B, C, T, H, W]``).
        x_hat: reconstruction, exactly the shape of ``x`` (no broadcasting).
        kind: ``"l1"`` or ``"l2"``.

    Returns:
        A scalar tensor; gradients flow to both inputs.
    """
    if kind not in RECONSTRUCTION_KINDS:
        raise ValueError(f"reconstruction kind must be one of {RECONSTRUCTION_KINDS}, got {kind!r}")
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)} (no broadcasting)"
        )
    diff = x - x_hat
    return diff.abs().mean() if kind == "l1" else diff.square().mean()
