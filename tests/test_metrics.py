"""psnr and ssim against independent float64 numpy computations, with knowable closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenizer.metrics import psnr, ssim


def _unit64(x: torch.Tensor) -> np.ndarray:
    return np.clip((x.double().numpy() + 1.0) / 2.0, 0.0, 1.0)


def _psnr_reference(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    diff = _unit64(x) - _unit64(y)
    mse = (diff**2).reshape(diff.shape[0], -1).mean(axis=1)
    return 10.0 * np.log10(1.0 / mse)


def _ssim_reference(x: torch.Tensor, y: torch.Tensor, window: int, sigma: float = 1.5) -> np.ndarray:
    """Wang et al.'s SSIM with explicit loops over every window position, in float64."""
    a, b = _unit64(x), _unit64(y)
    offsets = np.arange(window) - (window - 1) / 2.0
    g = np.exp(-(offsets**2) / (2.0 * sigma**2))
    weights = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    batch, channels, height, width = a.shape
    out = np.zeros(batch)
    for n in range(batch):
        scores = []
        for c in range(channels):
            for i in range(height - window + 1):
                for j in range(width - window + 1):
                    pa = a[n, c, i : i + window, j : j + window]
                    pb = b[n, c, i : i + window, j : j + window]
                    mu_a, mu_b = (weights * pa).sum(), (weights * pb).sum()
                    var_a = (weights * (pa - mu_a) ** 2).sum()
                    var_b = (weights * (pb - mu_b) ** 2).sum()
                    cov = (weights * (pa - mu_a) * (pb - mu_b)).sum()
                    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
                    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
                    scores.append(num / den)
        out[n] = np.mean(scores)
    return out


def _pair(shape: tuple[int, ...], noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.4 - 1.2  # some pixels outside [-1, 1]
    y = x + noise * torch.randn(shape, generator=generator, dtype=torch.float64)
    return x, y


# --- psnr ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1, 7), (3, 3, 7, 11), (2, 3, 17, 1)])
def test_psnr_matches_float64_reference(dtype, shape):
    x, y = _pair(shape, noise=0.3, seed=sum(shape))
    x, y = x.to(dtype), y.to(dtype)  # the reference sees the same rounded inputs, so one fp32 tolerance fits all
    got = psnr(x, y)
    assert got.shape == (shape[0],) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), _psnr_reference(x, y), rtol=0, atol=2e-5)


def test_psnr_equals_the_eight_bit_definition():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (2, 3, 9, 5), generator=generator)
    b = (a + torch.randint(-20, 21, a.shape, generator=generator)).clamp(0, 255)
    mse8 = ((a - b).double() ** 2).flatten(1).mean(1)
    expected = 20 * math.log10(255.0) - 10 * torch.log10(mse8)
    got = psnr(a.float() / 127.5 - 1, b.float() / 127.5 - 1)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-5)


def test_psnr_known_values_and_infinity():
    black, white = torch.full((1, 3, 4, 4), -1.0), torch.ones(1, 3, 4, 4)
    assert psnr(black, white).item() == pytest.approx(0.0, abs=1e-6)  # mse 1
    grey = torch.zeros(1, 3, 4, 4)
    assert psnr(black, grey).item() == pytest.approx(10 * math.log10(4.0), abs=1e-5)  # mse 1/4
    x, y = _pair((3, 3, 5, 6), noise=0.1, seed=1)
    y[1] = x[1]
    scores = psnr(x, y)
    assert math.isinf(scores[1].item()) and scores[1].item() > 0
    assert torch.isfinite(scores[[0, 2]]).all()
    assert torch.isinf(psnr(x, x.clone())).all()


def test_psnr_clips_before_comparing():
    x = torch.full((1, 1, 2, 2), 1.0)
    assert math.isinf(psnr(x, x + 0.5).item())  # 1.5 is clipped to 1


def test_psnr_more_noise_scores_lower():
    x, _ = _pair((2, 3, 16, 16), noise=0, seed=2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scores = torch.stack([psnr(x, x + s * noise) for s in (0.01, 0.05, 0.2)])
    assert (scores[:-1] > scores[1:]).all()


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_shape_mismatch_is_rejected(metric):
    with pytest.raises(ValueError, match="shape"):
        metric(torch.zeros(1, 3, 12, 12), torch.zeros(1, 3, 12, 13))
    with pytest.raises(ValueError):
        metric(torch.zeros(3, 12, 12), torch.zeros(3, 12, 12))


# --- ssim ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "window", "noise"),
    [
        ((1, 1, 12, 13), 5, 0.2),
        ((2, 3, 9, 10), 7, 0.5),
        ((1, 2, 11, 11), 11, 0.05),
        ((1, 3, 6, 9), 3, 1.0),
    ],
)
def test_ssim_matches_a_looped_float64_reference(shape, window, noise):
    x, y = _pair(shape, noise=noise, seed=window)
    got = ssim(x, y, window=window)
    assert got.shape == (shape[0],) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), _ssim_reference(x, y, window), rtol=0, atol=5e-6)


def test_ssim_window_larger_than_the_image_shrinks_to_its_smaller_side():
    x, y = _pair((1, 3, 6, 9), noise=0.3, seed=5)
    np.testing.assert_allclose(ssim(x, y).numpy(), _ssim_reference(x, y, window=6), rtol=0, atol=5e-6)


def test_ssim_of_flat_images_has_a_closed_form():
    # No variance anywhere: SSIM reduces to (2 a b + C1) / (a^2 + b^2 + C1) with a, b in [0, 1].
    a, b = 0.6, 0.3
    x, y = torch.full((1, 3, 12, 12), 2 * a - 1), torch.full((1, 3, 12, 12), 2 * b - 1)
    c1 = 0.01**2
    # fp32 variances (E[x^2] - mu^2) carry ~1e-7 of cancellation error against C2 = 9e-4, hence 1e-4;
    # C1 = 0.01 instead of 0.01^2 would move the value by 4e-3.
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-4)


def test_ssim_identical_is_one_symmetric_and_noise_lowers_it():
    x, _ = _pair((2, 3, 16, 16), noise=0, seed=6)
    x = x.clamp(-0.6, 0.6)
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(2), rtol=0, atol=1e-6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    scores = torch.stack([ssim(x, x + s * noise) for s in (0.02, 0.1, 0.3)])
    assert (scores < 1 - 1e-4).all()
    assert (scores[:-1] > scores[1:]).all()
    y = x + 0.1 * noise
    torch.testing.assert_close(ssim(x, y), ssim(y, x), rtol=0, atol=1e-6)
