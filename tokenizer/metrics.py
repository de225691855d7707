"""Reconstruction quality metrics on pixels in ``[-1, 1]``, one value per image.

Both map pixels to ``[0, 1]`` first (``p = (x + 1) / 2``, clipped), so the figures match the usual 8-bit
definitions up to quantisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.detach().float().add(1.0).mul(0.5).clamp(0.0, 1.0)


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(1 / mean((p_x - p_y)^2))`` per image -> ``[B]``.

    Identical images give ``inf``.
    """
    _check(x, y)
    mse = (_unit(x) - _unit(y)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image -> ``[B]``, averaged over channels and positions.

    With Gaussian-weighted local means ``mu``, variances ``s^2`` and covariance ``s_xy`` over ``window`` x
    ``window`` patches (no padding), ``C1 = 0.01^2``, ``C2 = 0.03^2``:
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``.
    Images smaller than the window use a window of their smaller side.
    """
    _check(x, y)
    a, b = _unit(x), _unit(y)
    window = min(window, a.shape[-1], a.shape[-2])
    kernel = _gaussian_window(window, sigma, a.shape[1], a.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return score.flatten(1).mean(1)
