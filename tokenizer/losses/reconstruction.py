"""Pixel reconstruction losses of a tokenizer: mean absolute or mean squared error, a chroma error, ``1 - SSIM``."""

from __future__ import annotations

import torch

from ..metrics import RGB_TO_YCBCR, structural_similarity

RECONSTRUCTION_KINDS = ("l1", "l2")


def _check_same_shape(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    """Raise when the target and the reconstruction differ in shape (the losses never broadcast)."""
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)} (no broadcasting)"
        )


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
    _check_same_shape(x, x_hat)
    diff = x - x_hat
    return diff.abs().mean() if kind == "l1" else diff.square().mean()


def ssim_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """``1 - mean SSIM(x, x_hat)`` (``tokenizer.metrics.ssim``'s formula on ``p = (x + 1) / 2``, unclipped so
    out-of-range pixels keep their gradient), computed in fp32; a video ``[B, C, T, H, W]`` is scored frame by
    frame. Rewards matching local means, contrasts and correlations, which plain L1 weighs only by pixel."""
    _check_same_shape(x, x_hat)
    if x.ndim == 5:
        x, x_hat = (v.transpose(1, 2).flatten(0, 1) for v in (x, x_hat))
    with torch.autocast(x.device.type, enabled=False):  # autocast would run the SSIM convolutions in bf16
        a, b = (v.float().add(1.0).mul(0.5) for v in (x, x_hat))
        return 1.0 - structural_similarity(a, b).mean()


CHROMA = RGB_TO_YCBCR[1:]  # BT.601's Cb and Cr rows (metrics.RGB_TO_YCBCR)


def chroma_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute chroma error ``(1/2N) sum (|Cb(x) - Cb(x_hat)| + |Cr(x) - Cr(x_hat)|)`` over the ``N``
    pixels of RGB images ``[B, 3, ...]`` (``CHROMA``: BT.601's Cb, Cr rows, which ignore luma), in fp32.

    Natural images vary far more in luma than in chroma, so under plain L1 a small model trades chroma for luma
    detail and returns colours grey; weighing this term restores the balance.
    """
    _check_same_shape(x, x_hat)
    if x.ndim < 3 or x.shape[1] != 3:
        raise ValueError(f"chroma_loss needs RGB [B, 3, ...] pixels, got shape {tuple(x.shape)}")
    with torch.autocast(x.device.type, enabled=False):  # autocast would run the matmul in bf16
        rows = torch.tensor(CHROMA, device=x.device)
        diff = (x.float() - x_hat.float()).movedim(1, -1) @ rows.T
        return diff.abs().mean()
