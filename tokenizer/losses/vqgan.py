"""The combined VQ-GAN training loss (Esser et al. 2021, arXiv:2012.09841): reconstruction + LPIPS + quantizer
loss + an adaptively weighted patch-GAN term, and the discriminator's own loss."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .discriminator import DISC_NORMS, PatchDiscriminator, PatchDiscriminator3D
from .gan import D_LOSSES, G_LOSSES, LeCam, adaptive_generator_weight
from .lpips import build_perceptual
from .reconstruction import RECONSTRUCTION_KINDS, chroma_loss, reconstruction_loss, ssim_loss


@dataclass(frozen=True)
class VQGANLossConfig:
    """The ``loss`` section of a training config; errors name a field as its key there (``loss.disc_layers``)."""

    rec_kind: str = "l1"  # "l1" (taming) or "l2"; L1 gives sharper reconstructions
    rec_weight: float = 1.0  # weight of the pixel reconstruction loss
    ssim_weight: float = 0.0  # weight of 1 - SSIM (structure without a pretrained network; 0 turns it off)
    chroma_weight: float = 0.0  # weight of the mean absolute BT.601 chroma error (keeps colour in small models)
    perceptual_weight: float = 1.0  # weight of LPIPS; > 0 needs vgg_path and lin_path (0 turns it off)
    vgg_path: str | None = None  # torchvision's vgg16 ImageNet weights (vgg16-397923af.pth or .safetensors)
    lin_path: str | None = None  # the lpips package's linear heads (lpips/weights/v0.1/vgg.pth or .safetensors)
    # Weight of the adaptively scaled GAN term. 0.8 as taming's ImageNet VQGAN (vqgan_imagenet_f16_1024.yaml,
    # the best documented run); the adaptive weight already matches gradient scales, so this only fine-tunes.
    disc_weight: float = 0.8
    disc_start: int = 10000  # step from which the GAN terms switch on; the autoencoder first learns to reconstruct
    disc_loss: str = "hinge"  # "hinge" (taming) or "non_saturating"
    disc_layers: int = 3  # stride-2 convs of the patch discriminator (70x70 patches for 3)
    disc_width: int = 64  # channels of the discriminator's first conv (pix2pix's ndf)
    disc_norm: str = "batch"  # "batch" as taming; "group" for small per-GPU batches; or "none"
    # 2: one PatchDiscriminator (video frames scored as images); 3: also a PatchDiscriminator3D on video clips
    disc_dims: int = 2
    adaptive_weight_max: float = 1e4  # upper clamp of the adaptive GAN weight (taming's value)
    lecam_weight: float = 0.0  # weight of the LeCam regulariser in the discriminator loss (0: off; ~0.001-0.01)
    quantizer_weight: float = 1.0  # weight of the quantizer's own loss (commitment / codebook / entropy)

    def __post_init__(self) -> None:
        for name in ("vgg_path", "lin_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                if not isinstance(value, os.PathLike):
                    raise TypeError(f"loss.{name} must be a path or None, got {type(value).__name__}")
                object.__setattr__(self, name, os.fspath(value))
        choices = {
            "rec_kind": RECONSTRUCTION_KINDS,
            "disc_loss": tuple(D_LOSSES),
            "disc_norm": DISC_NORMS,
            "disc_dims": (2, 3),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"loss.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in (
            "rec_weight",
            "ssim_weight",
            "chroma_weight",
            "perceptual_weight",
            "disc_weight",
            "lecam_weight",
            "quantizer_weight",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        for name, minimum in (("disc_start", 0), ("disc_layers", 1), ("disc_width", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"loss.{name} must be an integer >= {minimum}, got {value!r}")
        if not self.adaptive_weight_max > 0:
            raise ValueError(f"loss.adaptive_weight_max must be > 0, got {self.adaptive_weight_max}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VQGANLossConfig:
        """Inverse of ``to_dict``; absent fields take their defaults, unknown ones are an error."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown keys in loss: {unknown}")
        return cls(**data)


class VQGANLoss(nn.Module):
    """Generator and discriminator losses of VQ-GAN training.

    Holds the frozen LPIPS network (``perceptual``, ``None`` when ``perceptual_weight == 0``), the patch
    discriminators (``discriminators()``: the frame one, plus a 3-D one for videos when ``disc_dims == 3``;
    optimise them with a separate optimizer) and, when ``lecam_weight > 0``, the ``LeCam`` averages (of the
    frame discriminator's logits). With ``[.]`` the indicator and ``lambda`` the adaptive weight:

        L_rec' = rec_weight * L_rec(x, x_hat) + chroma_weight * L_chroma(x, x_hat) + ssim_weight * (1 - SSIM(x, x_hat))
                 + perceptual_weight * mean_b LPIPS(x_hat, x)
        L_gen  = L_rec' + quantizer_weight * L_q + [step >= disc_start] * disc_weight * lambda * L_G(D(x_hat))
        lambda = adaptive_generator_weight(L_rec', L_G, last_layer)   (training mode only; else 0)
        L_disc = [step >= disc_start] * (L_D(D(x), D(sg(x_hat))) + lecam_weight * R_LC)

    With two discriminators, ``L_G`` and ``L_D`` are sums over both. Pixels are in ``[-1, 1]``, ``[B, 3, H, W]``
    or ``[B, 3, T, H, W]``; the frame discriminator scores the frames of a video as images.

    Use: ``loss, logs = crit.generator_loss(...)``; backward; generator step. Then zero the discriminator's
    gradients (the generator loss also reaches them) and run ``crit.discriminator_loss(...)``; before
    ``disc_start`` it returns a zero with no graph: skip its backward and step (``loss.requires_grad`` is False).
    """

    def __init__(self, config: VQGANLossConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VQGANLossConfig()
        self.perceptual = build_perceptual(config.vgg_path, config.lin_path, config.perceptual_weight)
        self.discriminator = PatchDiscriminator(3, config.disc_width, config.disc_layers, config.disc_norm)
        self.discriminator_3d = (
            PatchDiscriminator3D(3, config.disc_width, config.disc_layers, config.disc_norm)
            if config.disc_dims == 3
            else None
        )
        self.lecam = LeCam() if config.lecam_weight > 0 else None
        self._d_loss = D_LOSSES[config.disc_loss]
        self._g_loss = G_LOSSES[config.disc_loss]

    def gan_active(self, step: int) -> bool:
        """Whether the GAN terms are on at ``step``."""
        return step >= self.config.disc_start

    def discriminators(self) -> list[nn.Module]:
        """The trainable discriminators (optimise their parameters with one separate optimizer)."""
        return [d for d in (self.discriminator, self.discriminator_3d) if d is not None]

    def _discriminate(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each discriminator that applies: the frame one always (video frames folded into the
        batch), the 3-D one on videos when ``disc_dims == 3``."""
        frames = x.transpose(1, 2).flatten(0, 1) if x.ndim == 5 else x
        logits = [self.discriminator(frames)]
        if x.ndim == 5 and self.discriminator_3d is not None:
            logits.append(self.discriminator_3d(x))
        return logits

    def generator_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        quantizer_loss: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The autoencoder's loss ``L_gen`` (see the class docstring).

        Args:
            x: target pixels in ``[-1, 1]``.
            x_hat: the reconstruction, ``x``'s shape, attached to the autoencoder's graph.
            quantizer_loss: scalar loss from the quantizer (``QuantizerOutput.loss``).
            step: global training step (compared with ``disc_start``).
            last_layer: weight of the decoder's last layer, needed for the adaptive weight when the GAN term is
                on in training mode.

        Returns:
            ``(loss, logs)``: the scalar loss and detached scalars ``rec``, ``ssim_loss``, ``chroma``, ``perceptual``, ``quantizer``, ``g``
            (the generator loss, 0 while the GAN is off) and ``d_weight`` (``disc_weight * lambda``).
            The discriminator does not run before ``disc_start``.
        """
        cfg = self.config
        zero = x.new_zeros((), dtype=torch.float32)
        rec = reconstruction_loss(x, x_hat, cfg.rec_kind)
        perceptual = self.perceptual(x_hat, x).mean() if self.perceptual is not None else zero
        structure = ssim_loss(x, x_hat) if cfg.ssim_weight > 0 else zero
        chroma = chroma_loss(x, x_hat) if cfg.chroma_weight > 0 else zero
        nll = cfg.rec_weight * rec + cfg.chroma_weight * chroma + cfg.ssim_weight * structure
        nll = nll + cfg.perceptual_weight * perceptual
        loss = nll + cfg.quantizer_weight * quantizer_loss
        g, d_weight = zero, zero
        if self.gan_active(step) and cfg.disc_weight > 0:
            g = sum(self._g_loss(logits) for logits in self._discriminate(x_hat))
            if self.training and torch.is_grad_enabled():
                if last_layer is None:
                    raise ValueError("generator_loss needs last_layer (the decoder's last weight) once the GAN is on")
                d_weight = cfg.disc_weight * adaptive_generator_weight(nll, g, last_layer, cfg.adaptive_weight_max)
                loss = loss + d_weight * g
        logs = {
            "rec": rec.detach(),
            "ssim_loss": structure.detach(),
            "chroma": chroma.detach(),
            "perceptual": perceptual.detach(),
            "quantizer": torch.as_tensor(quantizer_loss).detach(),
            "g": g.detach(),
            "d_weight": d_weight.detach(),
        }
        return loss, logs

    def discriminator_loss(
        self, x: torch.Tensor, x_hat: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The discriminator's loss ``L_disc`` on real ``x`` and reconstructed ``x_hat`` (detached here).

        Returns:
            ``(loss, logs)`` with detached scalars ``d`` (the loss), ``logits_real``, ``logits_fake`` (mean
            logits) and ``lecam`` (``R_LC``, 0 when off). Before ``disc_start`` everything is a zero tensor with
            no graph and the discriminator does not run.
        """
        zero = x.new_zeros((), dtype=torch.float32)
        if not self.gan_active(step):
            return zero, {"d": zero, "logits_real": zero, "logits_fake": zero, "lecam": zero}
        all_real = self._discriminate(x.detach())
        all_fake = self._discriminate(x_hat.detach())
        loss = sum(self._d_loss(real, fake) for real, fake in zip(all_real, all_fake))
        logits_real, logits_fake = all_real[0], all_fake[0]  # the frame discriminator's
        lecam = zero
        if self.lecam is not None:
            lecam = self.lecam(logits_real, logits_fake)
            loss = loss + self.config.lecam_weight * lecam
        logs = {
            "d": loss.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
            "lecam": lecam.detach(),
        }
        return loss, logs
