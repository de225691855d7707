"""Adversarial losses against hand-computed values, the adaptive weight against manual autograd, LeCam's EMA."""

from __future__ import annotations

import math

import pytest
import torch

from tokenizer.losses import (
    LeCam,
    adaptive_generator_weight,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)

REAL = [2.0, 0.5, -1.0]
FAKE = [-2.0, 0.5, 1.5, 0.0]  # a different count from REAL: the two means are separate


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_discriminator_losses():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    hinge = 0.5 * ((0 + 0.5 + 2.0) / 3 + (0 + 1.5 + 2.5 + 1.0) / 4)
    assert hinge_d_loss(real, fake).item() == pytest.approx(hinge, rel=1e-6)
    ns = 0.5 * (sum(softplus(-r) for r in REAL) / 3 + sum(softplus(f) for f in FAKE) / 4)
    assert non_saturating_d_loss(real, fake).item() == pytest.approx(ns, rel=1e-6)


def test_generator_losses():
    fake = torch.tensor(FAKE).view(2, 1, 2)
    assert hinge_g_loss(fake).item() == pytest.approx(-sum(FAKE) / 4)
    assert non_saturating_g_loss(fake).item() == pytest.approx(sum(softplus(-f) for f in FAKE) / 4, rel=1e-6)


def _toy():
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(4, 3, 1)
    h = torch.randn(2, 4, 5, 5)
    out = layer(h)
    rec = (out - torch.randn_like(out)).abs().mean()
    g = -(out * torch.randn_like(out)).mean()
    return layer.weight, rec, g


def test_adaptive_weight_matches_manual_grad():
    weight, rec, g = _toy()
    (rec_grad,) = torch.autograd.grad(rec, weight, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g, weight, retain_graph=True)
    expected = rec_grad.norm() / (g_grad.norm() + 1e-6)
    got = adaptive_generator_weight(rec, g, weight)
    assert not got.requires_grad
    assert 0.1 < expected.item() < 1e3  # a ratio the clamp leaves alone
    torch.testing.assert_close(got, expected)
    (rec + got * g).backward()  # the graph was retained
    assert weight.grad is not None


def test_adaptive_weight_clamps():
    weight, rec, g = _toy()
    ratio = adaptive_generator_weight(rec, g, weight).item()
    assert adaptive_generator_weight(rec, g, weight, max_weight=ratio / 3).item() == pytest.approx(ratio / 3)
    assert adaptive_generator_weight(rec, 1e-9 * g, weight).item() == 1e4  # tiny GAN gradient -> the clamp
    with pytest.raises(ValueError, match="last_layer"):
        adaptive_generator_weight(rec, g, weight.detach())


def test_lecam_ema_and_value():
    lecam = LeCam(decay=0.9)
    real = torch.tensor([1.0, 3.0])  # mean 2
    fake = torch.tensor([-1.0, 0.0, -5.0], requires_grad=True)  # mean -2
    reg = lecam(real, fake)
    ema_real, ema_fake = 0.1 * 2.0, 0.1 * -2.0
    assert lecam.ema_real.item() == pytest.approx(ema_real)
    assert lecam.ema_fake.item() == pytest.approx(ema_fake)
    expected = sum(max(r - ema_fake, 0) ** 2 for r in [1.0, 3.0]) / 2
    expected += sum(max(ema_real - f, 0) ** 2 for f in [-1.0, 0.0, -5.0]) / 3
    assert reg.item() == pytest.approx(expected, rel=1e-6)
    reg.backward()
    assert fake.grad.abs().sum() > 0
    lecam(real, fake)  # second step: decay applies to the running value
    assert lecam.ema_real.item() == pytest.approx(0.9 * ema_real + 0.1 * 2.0)
    lecam.eval()
    lecam(real + 100, fake)
    assert lecam.ema_real.item() == pytest.approx(0.9 * ema_real + 0.1 * 2.0)  # no update in eval
    assert set(lecam.state_dict()) == {"ema_real", "ema_fake"}
