"""Colour augmentation (tokenizer.data.colour): chroma turned and scaled, luma and greys kept, reproducible."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer.data import CropPolicy, load_sample
from tokenizer.data.colour import CHROMA_GAIN_RANGE, chroma_matrix, random_chroma, rotate_chroma
from tokenizer.data.stream import ClipStream
from tokenizer.data.video import ClipSpec
from tokenizer.data.video_synth import make_test_clip
from tokenizer.train_config import DataConfig


def _reference_rotation(pixels: torch.Tensor, angle: float, gain: float) -> torch.Tensor:
    """Pixel by pixel through BT.601 YCbCr, written out from the standard's equations."""
    r, g, b = pixels.double()
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb, cr = (b - y) / 1.772, (r - y) / 1.402
    cb, cr = gain * (math.cos(angle) * cb - math.sin(angle) * cr), gain * (math.sin(angle) * cb + math.cos(angle) * cr)
    r, b = y + 1.402 * cr, y + 1.772 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b]).clamp(-1, 1).float()


def _luma(pixels: torch.Tensor) -> torch.Tensor:
    return 0.299 * pixels[0] + 0.587 * pixels[1] + 0.114 * pixels[2]


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.0, math.pi])
@pytest.mark.parametrize("gain", [0.75, 1.0, 1.5])
def test_rotation_matches_the_ycbcr_equations(angle, gain):
    pixels = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(rotate_chroma(pixels, angle, gain), _reference_rotation(pixels, angle, gain))


def test_no_turn_is_the_identity_and_greys_never_change():
    torch.testing.assert_close(chroma_matrix(0.0, 1.0), torch.eye(3), atol=1e-6, rtol=0)
    greys = torch.linspace(-1, 1, 11).expand(3, 11)
    for angle, gain in ((1.0, 1.0), (math.pi, 1.5), (-2.5, 0.75)):
        torch.testing.assert_close(rotate_chroma(greys, angle, gain), greys, atol=1e-6, rtol=0)


def test_luma_is_kept_and_a_half_turn_gives_the_opposite_hue():
    muted = torch.tensor([[0.3], [0.0], [-0.2]])  # in gamut after any turn: nothing is clamped
    for angle in (0.5, 2.0, -1.0):
        torch.testing.assert_close(_luma(rotate_chroma(muted, angle)), _luma(muted), atol=1e-6, rtol=0)
    opposite = rotate_chroma(muted, math.pi)
    torch.testing.assert_close(opposite - _luma(muted), _luma(muted) - muted, atol=1e-6, rtol=0)


def test_rotation_keeps_dtype_and_range_and_names_a_bad_shape():
    pixels = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float16)
    out = rotate_chroma(pixels, 1.0, 1.5)
    assert out.dtype == torch.float16 and out.abs().max() <= 1.0
    with pytest.raises(ValueError, match="3 channels first"):
        rotate_chroma(torch.zeros(4, 2, 2), 0.5)


def test_random_chroma_draws_nothing_when_off_and_is_seeded_when_on():
    pixels = torch.rand(3, 4, 4) * 2 - 1
    rng = random.Random(5)
    assert random_chroma(pixels, rng, 0.0) is pixels
    assert rng.random() == random.Random(5).random()  # the stream of an unaugmented run is unchanged
    first, second = (random_chroma(pixels, random.Random(9), 1.0) for _ in range(2))
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, pixels)
    kept = sum(random_chroma(pixels, random.Random(seed), 0.5) is pixels for seed in range(400))
    assert 150 < kept < 250  # about half the samples are turned
    assert 0 < CHROMA_GAIN_RANGE[0] < 1 < CHROMA_GAIN_RANGE[1]


def test_an_augmented_sample_is_the_same_crop_with_its_hues_turned(tmp_path):
    rng = np.random.default_rng(0)
    array = (96 + rng.integers(0, 64, size=(40, 48, 3))).astype(np.uint8)  # muted colours: no clamping
    Image.fromarray(array).save(tmp_path / "photo.png")
    plain = load_sample(tmp_path / "photo.png", CropPolicy(size=16, max_zoom=1.5), seed=3)
    turned = load_sample(tmp_path / "photo.png", CropPolicy(size=16, max_zoom=1.5, chroma_jitter=1.0), seed=3)
    torch.testing.assert_close(_luma(turned), _luma(plain), atol=1e-5, rtol=0)
    assert (turned - plain).abs().max() > 0.02


def test_a_clip_is_turned_by_one_colour_map_for_all_its_frames(tmp_path):
    path = make_test_clip(tmp_path / "clip.mp4", frames=12, width=32, height=32, pattern="shapes")
    clip = ClipSpec(frames=5)
    plain_policy = CropPolicy(size=16, max_zoom=1.0)
    plain = ClipStream([path], plain_policy, seed=1, clip=clip)[0]
    turned = ClipStream([path], CropPolicy(size=16, max_zoom=1.0, chroma_jitter=1.0), seed=1, clip=clip)[0]
    maps = []
    for t in range(plain.shape[1]):
        source, target = plain[:, t].reshape(3, -1).T, turned[:, t].reshape(3, -1).T
        inside = (target.abs() < 0.98).all(dim=1)  # pixels the clamp left alone
        maps.append(torch.linalg.lstsq(source[inside].double(), target[inside].double()).solution)
    assert not torch.allclose(maps[0], torch.eye(3, dtype=torch.float64), atol=1e-2)
    for found in maps[1:]:
        torch.testing.assert_close(found, maps[0], atol=1e-3, rtol=0)


@pytest.mark.parametrize("value", [-0.1, 1.5, "half"])
def test_the_configs_name_a_bad_chroma_jitter(value):
    with pytest.raises(ValueError, match="data.chroma_jitter"):
        DataConfig(chroma_jitter=value)
    if not isinstance(value, str):
        with pytest.raises(ValueError, match="chroma_jitter"):
            CropPolicy(chroma_jitter=value)
