"""The default tokenizers shipped in the package: found by name, packaged, and as good as measured.

The floors sit a little under what the shipped weights measured (benchmarks/RESULTS.md, "Default
tokenizers"), so a broken load path, a wrong preprocessing step or a retrained model that got worse fails.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import torch

import tokenizer.models.tokenizer as tokenizer_module
from tokenizer import metrics
from tokenizer.assets import MODELS_DIR, sample_images, sample_videos
from tokenizer.data.items import crop_to_factor
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.video import iter_frames
from tokenizer.models import (
    SHIPPED_MODELS,
    Tokenizer,
    VideoTokenizer,
    load_tokenizer,
    resolve_pretrained,
    shipped_model_dir,
)

ROOT = Path(__file__).resolve().parents[2]
# Measured with the shipped weights (see the module docstring): held-out photo mean, worst photo, sample clip.
HELD_OUT_PSNR_FLOOR = 17.0  # measured 17.98 dB (chelsea 19.50, coffee 14.76, rocket 19.69)
ANY_PHOTO_PSNR_FLOOR = 14.0  # measured minimum 14.76 dB (coffee)
CLIP_PSNR_FLOOR = 15.5  # measured 16.39 dB over all 25 frames
HELD_OUT = ("chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def image_model() -> Tokenizer:
    return load_tokenizer("default")


@pytest.fixture(scope="module")
def video_model() -> VideoTokenizer:
    return load_tokenizer("default-video")


def _photo_psnr(model: Tokenizer, path: Path) -> float:
    pixels = load_for_tokenization(path, ImagePreprocess(factor=model.downsample_factor)).pixels[None]
    with torch.no_grad():
        reconstruction = model.decode(model.encode(pixels)).clamp(-1, 1)
    return metrics.psnr(pixels, reconstruction).item()


def test_shipped_models_load_by_name(image_model, video_model):
    assert type(image_model) is Tokenizer and type(video_model) is VideoTokenizer
    assert image_model.downsample_factor in (8, 16) and not image_model.training
    assert video_model.downsample_factor == image_model.downsample_factor and video_model.temporal_factor == 4
    assert Tokenizer.from_pretrained("default").config == image_model.config
    image_weights = MODELS_DIR / "default" / "model.safetensors"
    assert image_weights.stat().st_size <= 20 * 2**20  # the budget for the image model
    for name in SHIPPED_MODELS:
        card = json.loads((MODELS_DIR / name / "card.json").read_text())
        assert set(HELD_OUT) <= {Path(p).stem for p in card["held_out"]}
        assert not {Path(p).stem for p in card["train"]} & set(HELD_OUT)


def test_the_wheel_carries_the_models_and_samples():
    """Every shipped asset matches a package-data pattern of pyproject.toml (else pip would leave it out)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "tokenizer"
    packaged = {path for pattern in patterns["tokenizer"] for path in package.glob(pattern)}  # setuptools' globs
    assets = {p for p in (package / "assets").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert MODELS_DIR / "default-video" / "model.safetensors" in assets and sample_videos()
    assert sorted(map(str, assets - packaged)) == []


def test_default_round_trips_the_sample_photos(image_model):
    psnr = {path.stem: _photo_psnr(image_model, path) for path in sample_images()}
    assert set(HELD_OUT) <= set(psnr)
    assert sum(psnr[name] for name in HELD_OUT) / len(HELD_OUT) >= HELD_OUT_PSNR_FLOOR, psnr
    assert min(psnr.values()) >= ANY_PHOTO_PSNR_FLOOR, psnr


def test_default_video_round_trips_the_sample_clip(video_model):
    (clip,) = sample_videos()
    frames = iter_frames(clip)
    pixels = crop_to_factor(torch.stack(list(islice(frames, 1 + 4 * 4)), dim=1), video_model.downsample_factor)
    frames.close()
    with torch.no_grad():
        tokens = video_model.encode(pixels[None])
        reconstruction = video_model.decode(tokens).clamp(-1, 1)
    assert tokens.shape[1] == 5  # 1 + 16 frames -> 1 + 4 token frames
    per_frame = metrics.psnr(pixels.transpose(0, 1), reconstruction[0].transpose(0, 1))
    assert per_frame.mean().item() >= CLIP_PSNR_FLOOR, per_frame


def test_a_local_model_folder_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_pretrained("default") == MODELS_DIR / "default" == shipped_model_dir("default")
    (tmp_path / "default").mkdir()  # e.g. the recipe's runs/default: not a saved tokenizer
    assert resolve_pretrained("default") == MODELS_DIR / "default"
    (tmp_path / "default" / "config.json").write_text("{}")
    assert resolve_pretrained("default") == Path("default")
    assert resolve_pretrained(tmp_path / "other") == tmp_path / "other"
    with pytest.raises(ValueError, match="no shipped model 'other'; shipped: default, default-video"):
        shipped_model_dir("other")


def test_missing_shipped_files_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="shipped model 'default-video' is missing"):
        load_tokenizer("default-video")
    with pytest.raises(FileNotFoundError, match="shipped: default, default-video"):
        Tokenizer.from_pretrained(tmp_path / "not-a-model")
