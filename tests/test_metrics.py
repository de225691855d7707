"""psnr and ssim against independent float64 numpy computations, with knowable closed-form cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenizer.metrics import colour_cast, delta_e, psnr, rgb_to_lab, ssim


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


@pytest.mark.parametrize("metric", [psnr, ssim, delta_e, colour_cast])
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


# --- CIELAB: rgb_to_lab, delta_e, colour_cast --------------------------------------------------------------

# sRGB (8-bit) -> CIELAB with the D65 white, as tabulated by Bruce Lindbloom's CIE Color Calculator
# (brucelindbloom.com, "RGB model sRGB", reference white D65) and other sRGB/D65 converters (coloraide's "Lab D65"
# page lists red as 53.237, 80.09, 67.203: its matrix differs in the 4th digit). CSS's lab() uses D50 and differs.
LAB_REFERENCE = {
    (255, 0, 0): (53.2408, 80.0925, 67.2032),
    (0, 255, 0): (87.7347, -86.1827, 83.1793),
    (0, 0, 255): (32.2970, 79.1875, -107.8602),
    (128, 128, 128): (53.5850, 0.0, 0.0),
    (255, 255, 255): (100.0, 0.0, 0.0),
    (0, 0, 0): (0.0, 0.0, 0.0),
}


def _flat(rgb8: tuple[int, int, int], size: tuple[int, int] = (4, 5), dtype=torch.float64) -> torch.Tensor:
    """A flat image of one 8-bit sRGB colour, in [-1, 1]."""
    return (torch.tensor(rgb8, dtype=dtype) / 127.5 - 1).reshape(1, 3, 1, 1).expand(1, 3, *size).contiguous()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rgb8", list(LAB_REFERENCE))
def test_rgb_to_lab_matches_published_values(rgb8, dtype):
    lab = rgb_to_lab(_flat(rgb8, dtype=dtype))
    assert lab.shape == (1, 3, 4, 5) and lab.dtype == dtype
    expected = torch.tensor(LAB_REFERENCE[rgb8], dtype=torch.float64).reshape(1, 3, 1, 1).expand_as(lab)
    torch.testing.assert_close(lab.double(), expected, rtol=0, atol=2e-3)


def test_rgb_to_lab_white_is_exact_and_out_of_range_pixels_clip():
    white = rgb_to_lab(torch.ones(1, 3, 2, 2))
    torch.testing.assert_close(
        white, torch.tensor([100.0, 0, 0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2), rtol=0, atol=1e-3
    )
    torch.testing.assert_close(rgb_to_lab(torch.full((1, 3, 2, 2), 1.7)), white, rtol=0, atol=0)
    torch.testing.assert_close(rgb_to_lab(torch.full((1, 3, 2, 2), -3.0)), torch.zeros(1, 3, 2, 2), rtol=0, atol=1e-6)


def test_rgb_to_lab_agrees_with_scikit_image():
    color = pytest.importorskip("skimage.color")
    x = torch.rand(2, 3, 7, 11, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 2 - 1
    theirs = np.stack([color.rgb2lab(((image + 1) / 2).permute(1, 2, 0).numpy()) for image in x])
    # scikit-image's sRGB matrix differs from ours in the 4th-5th digit: a few hundredths of a unit.
    np.testing.assert_allclose(rgb_to_lab(x).permute(0, 2, 3, 1).numpy(), theirs, rtol=0, atol=0.05)


def test_delta_e_of_flat_colours_is_the_lab_distance():
    red, white = _flat((255, 0, 0)), _flat((255, 255, 255))
    expected = math.dist(LAB_REFERENCE[(255, 0, 0)], LAB_REFERENCE[(255, 255, 255)])
    assert delta_e(red, white).item() == pytest.approx(expected, abs=5e-3)
    assert colour_cast(red, white).item() == pytest.approx(expected, abs=5e-3)


def _texture(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.6 - 0.8


def test_identical_images_score_zero_and_the_metrics_are_symmetric():
    x, y = _texture((3, 3, 9, 13), seed=12), _texture((3, 3, 9, 13), seed=13)
    for metric in (delta_e, colour_cast):
        assert metric(x, x.clone()).tolist() == [0.0, 0.0, 0.0]
        scores = metric(x, y)
        assert scores.shape == (3,) and scores.dtype == torch.float32 and (scores > 1).all()
        torch.testing.assert_close(scores, metric(y, x), rtol=0, atol=1e-5)


def test_delta_e_is_the_mean_of_per_pixel_distances_per_image():
    x, y = _texture((2, 3, 5, 7), seed=14), _texture((2, 3, 5, 7), seed=15)
    y[1] = x[1]
    y[0, :, 0, 0] = x[0, :, 0, 0]
    per_pixel = (rgb_to_lab(x) - rgb_to_lab(y)).pow(2).sum(1).sqrt()
    assert per_pixel[0, 0, 0] == 0
    expected = torch.stack([per_pixel[0].mean(), torch.tensor(0.0, dtype=torch.float64)]).float()
    torch.testing.assert_close(delta_e(x, y), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(delta_e(x[:1], y[:1]), expected[:1], rtol=0, atol=1e-5)


def test_a_tint_on_a_grey_image_is_a_cast_that_grows_with_the_tint():
    grey = _texture((1, 1, 16, 16), seed=16).expand(1, 3, 16, 16).contiguous()  # equal channels: no colour
    tint = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64).reshape(1, 3, 1, 1)  # towards orange (sepia)
    casts = torch.cat([colour_cast(grey, grey + t * tint) for t in (0.02, 0.05, 0.1, 0.2)])
    assert (casts[1:] > casts[:-1] + 1).all() and casts[0] > 1
    assert colour_cast(grey, grey + 0.2 * tint).item() > 15  # far past a visible difference


def test_colour_cast_ignores_texture_that_keeps_the_tile_means():
    x = _texture((2, 3, 16, 24), seed=17)
    block_means = torch.nn.functional.avg_pool2d(x, 8)
    blurred = block_means.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # all texture lost
    assert (delta_e(x, blurred) > 5).all()
    torch.testing.assert_close(colour_cast(x, blurred), torch.zeros(2), rtol=0, atol=1e-4)
    assert (colour_cast(x, blurred, block=4) > 1).all()  # finer tiles see the texture


def test_colour_cast_averages_partial_edge_tiles_over_their_pixels():
    x, y = _texture((1, 3, 10, 7), seed=18), _texture((1, 3, 10, 7), seed=19)

    def tile_means(t: torch.Tensor) -> torch.Tensor:
        rows = [
            torch.stack([t[..., i : i + 4, j : j + 4].mean(dim=(-2, -1)) for j in range(0, 7, 4)], dim=-1)
            for i in range(0, 10, 4)
        ]
        return torch.stack(rows, dim=-2)  # [1, 3, 3, 2]

    expected = delta_e(tile_means(x), tile_means(y))
    torch.testing.assert_close(colour_cast(x, y, block=4), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(colour_cast(x, y, block=1), delta_e(x, y), rtol=0, atol=1e-5)
    whole = delta_e(x.mean(dim=(-2, -1), keepdim=True), y.mean(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(colour_cast(x, y, block=64), whole, rtol=0, atol=1e-5)


def test_colour_metrics_reject_non_rgb_images_and_bad_blocks():
    with pytest.raises(ValueError, match="3 channels|RGB"):
        delta_e(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="RGB"):
        colour_cast(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"x must be .*\[B, 3, H, W\]"):
        rgb_to_lab(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="block"):
        colour_cast(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), block=0)
