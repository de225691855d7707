"""Pixel reconstruction loss: values against hand sums, errors."""

from __future__ import annotations

import pytest
import torch

from tokenizer import metrics
from tokenizer.losses import chroma_loss, reconstruction_loss, ssim_loss


def test_l1_and_l2_values():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x_hat = torch.tensor([[0.0, 1.0], [0.5, 1.0]])
    # differences 1, -3, 0, 2
    assert reconstruction_loss(x, x_hat, "l1").item() == pytest.approx((1 + 3 + 0 + 2) / 4)
    assert reconstruction_loss(x, x_hat, "l2").item() == pytest.approx((1 + 9 + 0 + 4) / 4)
    assert reconstruction_loss(x, x_hat).item() == pytest.approx(1.5)  # default l1


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_video_shape_and_gradient(kind):
    x = torch.randn(2, 3, 5, 7, 7)
    x_hat = torch.randn(2, 3, 5, 7, 7, requires_grad=True)
    loss = reconstruction_loss(x, x_hat, kind)
    loss.backward()
    expected = (x - x_hat).abs() if kind == "l1" else (x - x_hat).square()
    assert torch.allclose(loss, expected.mean())
    assert x_hat.grad.abs().sum() > 0


def test_errors():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="'huber'"):
        reconstruction_loss(x, x, "huber")
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\) and \(1, 3, 4, 1\)"):
        reconstruction_loss(x, torch.zeros(1, 3, 4, 1))


def test_ssim_loss_is_one_minus_the_metric_and_trains():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 20, generator=g) * 2 - 1
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(ssim_loss(x, noisy), 1 - metrics.ssim(x, noisy).mean())
    x_hat = noisy.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([x_hat], lr=10.0)
    before = ssim_loss(x, x_hat).item()
    for _ in range(5):
        optimizer.zero_grad()
        ssim_loss(x, x_hat).backward()
        optimizer.step()
    assert ssim_loss(x, x_hat).item() < before  # a usable gradient


def test_ssim_loss_scores_video_frames():
    g = torch.Generator().manual_seed(1)
    video = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    other = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    frames = [v.transpose(1, 2).flatten(0, 1) for v in (video, other)]
    torch.testing.assert_close(ssim_loss(video, other), ssim_loss(*frames))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 16, 16\) and \(2, 3, 16, 16\)"):
        ssim_loss(video, other[:, :, 0])


def test_chroma_loss_ignores_luma_and_counts_colour():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 8, 6, generator=g) * 2 - 1
    brighter = x + 0.3  # the same shift on R, G and B: luma only
    assert chroma_loss(x, brighter).item() == pytest.approx(0.0, abs=1e-6)
    redder = x.clone()
    redder[:, 0] += 0.2
    # BT.601: Cb = (B - Y) / 1.772 and Cr = (R - Y) / 1.402 weigh R by -0.299 / 1.772 and (1 - 0.299) / 1.402
    assert chroma_loss(x, redder).item() == pytest.approx(0.2 * (0.299 / 1.772 + 0.701 / 1.402) / 2, rel=1e-5)
    video = torch.stack([x, redder], dim=2)  # [B, 3, T, H, W]
    assert chroma_loss(video, video.flip(2)).item() == pytest.approx(chroma_loss(x, redder).item(), rel=1e-5)
    with pytest.raises(ValueError, match="RGB"):
        chroma_loss(x[:, :2], x[:, :2])


def _bt601_chroma(x: torch.Tensor) -> torch.Tensor:
    """Cb, Cr of RGB ``[B, 3, ...]`` in fp64 from BT.601's definitions (not from ``CHROMA``)."""
    r, g, b = x.double().unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([(b - y) / 1.772, (r - y) / 1.402], dim=1)


def test_chroma_loss_matches_the_bt601_definition():
    g = torch.Generator().manual_seed(3)
    x, x_hat = (torch.rand(2, 3, 5, 7, generator=g) * 2 - 1 for _ in range(2))
    expected = (_bt601_chroma(x) - _bt601_chroma(x_hat)).abs().mean()
    assert chroma_loss(x, x_hat).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss_fn", [ssim_loss, chroma_loss])
def test_losses_run_in_fp32_under_bf16_autocast(loss_fn):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 24, 20, generator=g) * 2 - 1
    noisy = x + 0.02 * torch.randn(x.shape, generator=g)  # a small error: bf16 would round it away
    x_hat = noisy.clone().requires_grad_(True)
    loss = loss_fn(x, x_hat)
    (grad,) = torch.autograd.grad(loss, x_hat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16 = loss_fn(x, x_hat)
    (grad_bf16,) = torch.autograd.grad(loss_bf16, x_hat)
    assert loss_bf16.dtype == torch.float32
    torch.testing.assert_close(loss_bf16, loss, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad_bf16, grad, rtol=1e-6, atol=1e-12)
