"""Reconstruction quality metrics on pixels in ``[-1, 1]``, one value per image.

All map pixels to ``[0, 1]`` first (``p = (x + 1) / 2``, clipped), so the figures match the usual 8-bit
definitions up to quantisation. ``psnr`` and ``ssim`` compare values; ``delta_e`` and ``colour_cast`` compare
colours in CIELAB (the pixels read as sRGB, D65 white).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.601 RGB -> YCbCr rows (on RGB in [-1, 1], grey has Cb = Cr = 0): Y = 0.299 R + 0.587 G + 0.114 B,
# Cb = (B - Y) / 1.772, Cr = (R - Y) / 1.402. The chroma loss and the colour augmentation share it.
RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.299 / 1.772, -0.587 / 1.772, (1 - 0.114) / 1.772),
    ((1 - 0.299) / 1.402, -0.587 / 1.402, -0.114 / 1.402),
)


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
    return structural_similarity(_unit(x), _unit(y), window, sigma)


def structural_similarity(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``ssim``'s formula on images already in ``[0, 1]``, ``[B, C, H, W]`` -> ``[B]``, differentiable in both
    (the training loss ``1 - SSIM`` uses it; ``ssim`` is the detached, clipped metric)."""
    window = min(window, a.shape[-1], a.shape[-2])
    kernel = _gaussian_window(window, sigma, a.shape[1], a.device).to(a.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return score.flatten(1).mean(1)


# --- colour: CIELAB and Delta E ----------------------------------------------------------------------------

# sRGB (IEC 61966-2-1) linear RGB -> CIE XYZ for the D65 white, to 7 digits (the matrix Lindbloom tabulates);
# its rows sum to the white point below, so RGB white maps to L* = 100, a* = b* = 0.
_SRGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)  # CIE 1931 2-degree observer, Y normalised to 1


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB pixels ``[B, 3, H, W]`` in ``[-1, 1]`` (clipped; D65 white) -> CIELAB ``[B, 3, H, W]`` (L*, a*, b*).

    With ``p = (x + 1) / 2`` in ``[0, 1]``:

    1. sRGB decoding to linear light: ``c = p / 12.92`` if ``p <= 0.04045`` else ``((p + 0.055) / 1.055)^2.4``.
    2. ``[X, Y, Z] = M [R, G, B]`` with the sRGB/D65 matrix ``M`` (``_SRGB_TO_XYZ``).
    3. With the white ``(Xn, Yn, Zn) = (0.95047, 1, 1.08883)``, ``d = 6/29`` and
       ``f(t) = t^(1/3)`` if ``t > d^3`` else ``t / (3 d^2) + 4/29``:
       ``L* = 116 f(Y/Yn) - 16``, ``a* = 500 (f(X/Xn) - f(Y/Yn))``, ``b* = 200 (f(Y/Yn) - f(Z/Zn))``.

    L* runs from 0 (black) to 100 (white); a* is green (-) to red (+), b* blue (-) to yellow (+). Computed in
    fp32 (fp64 for fp64 input), detached.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be sRGB pixels [B, 3, H, W], got shape {tuple(x.shape)}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = x.detach().to(dtype).add(1.0).mul(0.5).clamp(0.0, 1.0)
    linear = torch.where(p <= 0.04045, p / 12.92, ((p + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_SRGB_TO_XYZ, dtype=dtype, device=x.device)
    white = torch.tensor(_D65_WHITE, dtype=dtype, device=x.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear) / white[:, None, None]
    d = 6.0 / 29.0
    f = torch.where(xyz > d**3, xyz ** (1.0 / 3.0), xyz / (3 * d * d) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=1)


def _check_rgb(x: torch.Tensor, y: torch.Tensor) -> None:
    _check(x, y)
    if x.shape[1] != 3:
        raise ValueError(f"colour metrics need RGB images [B, 3, H, W], got {x.shape[1]} channels")


def delta_e(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel colour error, CIE76 Delta E, between sRGB images ``[B, 3, H, W]`` in ``[-1, 1]`` -> ``[B]``.

    ``Delta E = sqrt((L*_x - L*_y)^2 + (a*_x - a*_y)^2 + (b*_x - b*_y)^2)`` per pixel (``rgb_to_lab``), averaged
    over the image. About 2.3 is a just-noticeable difference side by side. Identical images give 0.
    """
    _check_rgb(x, y)
    return (rgb_to_lab(x) - rgb_to_lab(y)).pow(2).sum(1).sqrt().flatten(1).mean(1).float()


def colour_cast(x: torch.Tensor, y: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Low-pass colour error: CIE76 Delta E between the ``block`` x ``block`` tile means of two sRGB images
    ``[B, 3, H, W]`` in ``[-1, 1]``, averaged over tiles -> ``[B]``.

    Each image is averaged over tiles in its sRGB values (edge tiles over the pixels they hold), then the tile
    means are compared as ``delta_e`` does. Texture lost inside a tile (blur, noise, ringing) barely counts; a
    shift of the local colour (a red cup decoded grey, a grey photo decoded sepia) counts in full. sRGB values,
    not linear light, are averaged so that a decoder's blur, which keeps the local mean of the values it was
    trained on, reads as no cast.
    """
    _check_rgb(x, y)
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")

    def tiles(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clamp(-1.0, 1.0)
        t = t if t.dtype == torch.float64 else t.float()
        return F.avg_pool2d(t, block, ceil_mode=True) if block > 1 else t

    return delta_e(tiles(x), tiles(y))
