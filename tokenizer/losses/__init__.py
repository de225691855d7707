"""Training losses of the tokenizers: pixel reconstruction, LPIPS perceptual distance, 2-D/3-D patch-GAN
discriminators with their adversarial losses, and the combined VQ-GAN loss."""

from __future__ import annotations

from .discriminator import DISC_NORMS, PatchDiscriminator, PatchDiscriminator3D
from .gan import (
    GAN_LOSSES,
    LeCam,
    adaptive_generator_weight,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)
from .lpips import LPIPS, build_perceptual
from .reconstruction import RECONSTRUCTION_KINDS, chroma_loss, reconstruction_loss, ssim_loss
from .vqgan import VQGANLoss, VQGANLossConfig

__all__ = [
    "DISC_NORMS",
    "GAN_LOSSES",
    "LPIPS",
    "RECONSTRUCTION_KINDS",
    "LeCam",
    "PatchDiscriminator",
    "PatchDiscriminator3D",
    "VQGANLoss",
    "VQGANLossConfig",
    "adaptive_generator_weight",
    "build_perceptual",
    "chroma_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "reconstruction_loss",
    "ssim_loss",
]
