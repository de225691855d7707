"""Colour augmentation: turn and scale the chroma of RGB pixels, keeping their luma.

In BT.601 YCbCr on RGB in ``[-1, 1]`` (grey has Cb = Cr = 0):

    Y = 0.299 R + 0.587 G + 0.114 B,    Cb = (B - Y) / 1.772,    Cr = (R - Y) / 1.402.

``rotate_chroma`` maps ``(Cb, Cr) -> gain * Rot(angle) (Cb, Cr)``, keeps ``Y``, returns to RGB and clamps to
``[-1, 1]``: every hue turns by ``angle``, saturation scales by ``gain``, luma is kept unless the clamp cuts a
colour pushed out of gamut, and grey pixels (so grayscale images) are unchanged. The whole map is one 3 x 3
matrix ``M = A^-1 diag(1, gain Rot(angle)) A`` with ``A`` the RGB -> YCbCr matrix above. A model trained on
a few photos learns their palette only; turning their hues shows it every hue at the same textures.
"""

from __future__ import annotations

import math
import random

import torch

from ..metrics import RGB_TO_YCBCR

_RGB_TO_YCBCR = torch.tensor(RGB_TO_YCBCR, dtype=torch.float64)
CHROMA_GAIN_RANGE = (0.75, 1.5)  # chroma gain drawn uniformly from this range by ``random_chroma``


def chroma_matrix(angle: float, gain: float) -> torch.Tensor:
    """The fp32 3 x 3 matrix ``M`` with ``rgb_out = M @ rgb_in`` (before clamping); see the module docstring."""
    cos, sin = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[1.0, 0.0, 0.0], [0.0, gain * cos, -gain * sin], [0.0, gain * sin, gain * cos]],
                        dtype=torch.float64)  # fmt: skip
    return (torch.linalg.inv(_RGB_TO_YCBCR) @ turn @ _RGB_TO_YCBCR).float()


def rotate_chroma(pixels: torch.Tensor, angle: float, gain: float = 1.0) -> torch.Tensor:
    """``pixels`` ``[3, ...]`` in ``[-1, 1]`` with hues turned by ``angle`` radians and saturation scaled by
    ``gain``, clamped to ``[-1, 1]``."""
    if pixels.shape[0] != 3:
        raise ValueError(f"pixels must have 3 channels first, got shape {tuple(pixels.shape)}")
    matrix = chroma_matrix(angle, gain).to(pixels.device)
    flat = pixels.float().reshape(3, -1)
    return (matrix @ flat).reshape(pixels.shape).clamp_(-1.0, 1.0).to(pixels.dtype)


def random_chroma(pixels: torch.Tensor, rng: random.Random, probability: float) -> torch.Tensor:
    """With ``probability``, ``rotate_chroma`` by an angle drawn from ``U(-pi, pi)`` and a gain from
    ``U(*CHROMA_GAIN_RANGE)``; else ``pixels`` unchanged. Draws from ``rng`` only when ``probability > 0``, so a
    stream without colour augmentation is the same as before it existed."""
    if probability <= 0.0 or rng.random() >= probability:
        return pixels
    angle = rng.uniform(-math.pi, math.pi)
    gain = rng.uniform(*CHROMA_GAIN_RANGE)
    return rotate_chroma(pixels, angle, gain)
