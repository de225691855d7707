"""Adversarial losses: discriminator and generator objectives, the VQGAN adaptive weight, LeCam regularisation.

Logits are the raw discriminator outputs (any shape); means run over all their elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_LOSSES = ("hinge", "non_saturating")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss, halved as in taming-transformers:

    L_D = 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))))
    """
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def non_saturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating (binary cross-entropy) discriminator loss, halved as taming's ``vanilla_d_loss``:

    L_D = 0.5 * (mean(softplus(-D(x))) + mean(softplus(D(x_hat))))
        = 0.5 * (-mean(log sigmoid(D(x))) - mean(log(1 - sigmoid(D(x_hat)))))
    """
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: ``L_G = -mean(D(x_hat))``."""
    return -logits_fake.mean()


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: ``L_G = mean(softplus(-D(x_hat))) = -mean(log sigmoid(D(x_hat)))``."""
    return F.softplus(-logits_fake).mean()


D_LOSSES = {"hinge": hinge_d_loss, "non_saturating": non_saturating_d_loss}
G_LOSSES = {"hinge": hinge_g_loss, "non_saturating": non_saturating_g_loss}


def adaptive_generator_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """VQGAN's adaptive weight of the generator loss (Esser et al. 2021, eq. 7):

        lambda = clamp(||grad_W L_rec|| / (||grad_W L_G|| + eps), 0, max_weight),   W = last_layer

    so the GAN gradient reaching the decoder's last layer is about as large as the reconstruction one.
    Both gradients are taken with ``torch.autograd.grad(..., retain_graph=True)``, so the caller can still
    backpropagate through both losses; the result is detached. (taming-transformers uses ``eps = 1e-4``.)

    Args:
        rec_loss: scalar reconstruction (+ perceptual) loss, depending on ``last_layer``.
        g_loss: scalar generator loss, depending on ``last_layer``.
        last_layer: the weight of the decoder's last layer (a tensor that requires grad).
        max_weight: upper clamp.
        eps: added to the denominator.

    Returns:
        A detached scalar tensor in ``[0, max_weight]``.
    """
    if not last_layer.requires_grad:
        raise ValueError("last_layer must require grad (pass the decoder's last weight, e.g. decoder.conv_out.weight)")
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


class LeCam(nn.Module):
    """LeCam regulariser for the discriminator (Tseng et al. 2021, arXiv:2104.03310).

    Keeps exponential moving averages of the mean real and fake logits (buffers ``ema_real``, ``ema_fake``,
    starting at 0), updated in training mode before the term is computed:

        ema_real <- decay * ema_real + (1 - decay) * mean(D(x))
        ema_fake <- decay * ema_fake + (1 - decay) * mean(D(x_hat))
        R_LC = mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(x_hat))^2)

    Add ``lecam_weight * R_LC`` to the discriminator loss. The averages are of this process's logits only
    (not all-reduced across ranks).
    """

    def __init__(self, decay: float = 0.99) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        """One EMA step with the batch means of the logits."""
        self.ema_real.lerp_(logits_real.detach().float().mean(), 1.0 - self.decay)
        self.ema_fake.lerp_(logits_fake.detach().float().mean(), 1.0 - self.decay)

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """``R_LC`` (a scalar carrying gradients to the logits); updates the averages first when training."""
        if self.training:
            self.update(logits_real, logits_fake)
        return F.relu(logits_real - self.ema_fake).square().mean() + F.relu(self.ema_real - logits_fake).square().mean()
