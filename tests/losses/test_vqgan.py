"""VQGANLoss and its config: the GAN switch at disc_start, the loss formula, the discriminator step, LeCam,
LPIPS wiring, video input, config validation and round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tokenizer.losses import LPIPS, VQGANLoss, VQGANLossConfig, chroma_loss, hinge_d_loss, non_saturating_g_loss
from tokenizer.metrics import structural_similarity


def small(**overrides) -> VQGANLossConfig:
    """A fast config: no LPIPS, a narrow two-layer discriminator, the GAN on from step 5."""
    return VQGANLossConfig(
        **{"perceptual_weight": 0.0, "disc_width": 8, "disc_layers": 2, "disc_start": 5, **overrides}
    )


class ToyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv_out(z))


def count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def batch():
    decoder = ToyDecoder()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = decoder(torch.randn(2, 4, 32, 32))
    return decoder, x, x_hat, torch.tensor(0.25, requires_grad=True)


def test_gan_off_before_disc_start():
    crit = VQGANLoss(small(rec_weight=2.0, quantizer_weight=3.0))
    calls = count_calls(crit.discriminator)
    decoder, x, x_hat, q = batch()
    loss, logs = crit.generator_loss(x, x_hat, q, step=4, last_layer=decoder.conv_out.weight)
    expected = 2.0 * (x - x_hat).abs().mean() + 3.0 * 0.25
    torch.testing.assert_close(loss, expected)
    assert logs["g"].item() == 0 and logs["d_weight"].item() == 0 and logs["perceptual"].item() == 0
    assert set(logs) == {"rec", "ssim_loss", "chroma", "perceptual", "quantizer", "g", "d_weight"}
    assert all(not v.requires_grad for v in logs.values())
    d_loss, d_logs = crit.discriminator_loss(x, x_hat, step=4)
    assert d_loss.item() == 0 and not d_loss.requires_grad
    assert set(d_logs) == {"d", "logits_real", "logits_fake", "lecam"}
    assert calls[0] == 0  # the discriminator never ran


def test_ssim_and_chroma_terms_add_their_weights():
    crit = VQGANLoss(small(ssim_weight=0.5, chroma_weight=2.0))
    decoder, x, x_hat, q = batch()
    loss, logs = crit.generator_loss(x, x_hat, q, step=0, last_layer=decoder.conv_out.weight)
    structure = 1 - structural_similarity((x + 1) / 2, (x_hat + 1) / 2).mean()
    torch.testing.assert_close(logs["ssim_loss"], structure.detach())
    torch.testing.assert_close(logs["chroma"], chroma_loss(x, x_hat).detach())
    expected = (x - x_hat).abs().mean() + 2.0 * chroma_loss(x, x_hat) + 0.5 * structure + 0.25
    torch.testing.assert_close(loss, expected)


def test_gan_on_after_disc_start():
    crit = VQGANLoss(small(disc_loss="non_saturating", disc_weight=0.5))
    calls = count_calls(crit.discriminator)
    decoder, x, x_hat, q = batch()
    weight = decoder.conv_out.weight
    loss, logs = crit.generator_loss(x, x_hat, q, step=5, last_layer=weight)
    assert calls[0] == 1
    # rebuild the expected value by hand with the discriminator in the same state
    rec = (x - x_hat).abs().mean()
    g = non_saturating_g_loss(crit.discriminator(x_hat))
    (rec_grad,) = torch.autograd.grad(rec, weight, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g, weight, retain_graph=True)
    lam = rec_grad.norm() / (g_grad.norm() + 1e-6)
    assert logs["g"].item() != 0
    torch.testing.assert_close(logs["g"], g.detach())
    torch.testing.assert_close(logs["d_weight"], 0.5 * lam)
    torch.testing.assert_close(loss, rec + 0.25 + 0.5 * lam * g)
    loss.backward()
    assert weight.grad.abs().sum() > 0 and q.grad.item() == 1.0


def test_eval_mode_skips_adaptive_weight():
    crit = VQGANLoss(small()).eval()
    _, x, x_hat, q = batch()
    loss, logs = crit.generator_loss(x, x_hat, q, step=10)  # no last_layer needed in eval
    assert logs["d_weight"].item() == 0 and logs["g"].item() != 0
    torch.testing.assert_close(loss, (x - x_hat).abs().mean() + 0.25)
    with pytest.raises(ValueError, match="last_layer"):
        VQGANLoss(small()).generator_loss(x, x_hat, q, step=10)


def test_discriminator_loss_value_and_detach():
    crit = VQGANLoss(small(disc_norm="none"))
    decoder, x, x_hat, _ = batch()
    loss, logs = crit.discriminator_loss(x, x_hat, step=5)
    expected = hinge_d_loss(crit.discriminator(x), crit.discriminator(x_hat.detach()))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logs["logits_real"], crit.discriminator(x).mean().detach())
    loss.backward()
    assert decoder.conv_out.weight.grad is None  # x_hat was detached
    assert all(p.grad is not None for p in crit.discriminator.parameters())


def test_lecam_term():
    crit = VQGANLoss(small(disc_norm="none", lecam_weight=0.1))
    _, x, x_hat, _ = batch()
    loss, logs = crit.discriminator_loss(x, x_hat, step=6)
    real, fake = crit.discriminator(x), crit.discriminator(x_hat.detach())
    ema_real, ema_fake = 0.01 * real.mean(), 0.01 * fake.mean()  # one EMA step from zero
    torch.testing.assert_close(crit.lecam.ema_real, ema_real.detach())
    reg = torch.relu(real - ema_fake).square().mean() + torch.relu(ema_real - fake).square().mean()
    torch.testing.assert_close(logs["lecam"], reg.detach())
    torch.testing.assert_close(loss, hinge_d_loss(real, fake) + 0.1 * reg)
    assert VQGANLoss(small()).lecam is None


def test_discriminator_learns_toy_split():
    torch.manual_seed(0)
    crit = VQGANLoss(small(disc_norm="group", disc_start=0))
    opt = torch.optim.Adam(crit.discriminator.parameters(), lr=2e-3)
    real = torch.sin(torch.linspace(0, 6, 16)).expand(2, 3, 16, 16)  # smooth stripes
    fake = torch.rand(2, 3, 16, 16) * 2 - 1  # noise
    losses = []
    for _ in range(10):
        loss, _ = crit.discriminator_loss(real, fake, step=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_video_with_2d_and_3d_discriminators():
    x = torch.rand(1, 3, 6, 16, 16) * 2 - 1
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    crit2 = VQGANLoss(small(disc_layers=1))
    _, logs2 = crit2.discriminator_loss(x, x_hat, step=5)
    frames = x.transpose(1, 2).flatten(0, 1)
    torch.testing.assert_close(logs2["logits_real"], crit2.discriminator(frames).mean().detach())
    crit3 = VQGANLoss(small(disc_dims=3))
    loss, logs = crit3.generator_loss(x, x_hat, torch.tensor(0.0), step=5, last_layer=x_hat)
    assert logs["g"].item() != 0 and logs["d_weight"].item() > 0
    loss.backward()
    assert x_hat.grad.abs().sum() > 0


def test_perceptual_term_from_files(lpips_files):
    vgg_path, lin_path = lpips_files
    cfg = small(perceptual_weight=0.7, vgg_path=vgg_path, lin_path=str(lin_path))
    assert cfg.vgg_path == str(vgg_path)  # paths are stored as strings (JSON-friendly)
    crit = VQGANLoss(cfg)
    assert isinstance(crit.perceptual, LPIPS)
    crit.train()
    assert crit.discriminator.training and not crit.perceptual.training
    _, x, x_hat, q = batch()
    x, x_hat = x[:1, :, :16, :16], x_hat[:1, :, :16, :16]
    loss, logs = crit.generator_loss(x, x_hat, q, step=0)
    p = crit.perceptual(x_hat, x).mean()
    assert p.item() > 0
    torch.testing.assert_close(logs["perceptual"], p.detach())
    torch.testing.assert_close(loss, (x - x_hat).abs().mean() + 0.7 * p + 0.25)
    with pytest.raises(ValueError, match="perceptual_weight=0"):
        VQGANLoss(VQGANLossConfig(disc_width=8))


def test_config_validation_and_round_trip():
    cfg = VQGANLossConfig(rec_kind="l2", lecam_weight=0.01, disc_norm="group")
    assert VQGANLossConfig.from_dict(cfg.to_dict()) == cfg
    assert VQGANLossConfig.from_dict({}) == VQGANLossConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rec_kind = "l1"
    bad = {
        "rec_kind": "l3",
        "disc_loss": "wasserstein",
        "disc_norm": "layer",
        "disc_dims": 1,
        "rec_weight": -1.0,
        "disc_weight": float("nan"),
        "disc_start": -1,
        "disc_layers": 0,
        "disc_width": 2.5,
        "adaptive_weight_max": 0.0,
    }
    for name, value in [*bad.items(), ("chroma_weight", -0.5), ("chroma_weight", float("nan"))]:
        with pytest.raises(ValueError, match=rf"^loss\.{name} "):  # the YAML key, not the class
            VQGANLossConfig(**{name: value})
    with pytest.raises(ValueError, match="unknown keys in loss: \\['lr'\\]"):
        VQGANLossConfig.from_dict({"lr": 1.0})
