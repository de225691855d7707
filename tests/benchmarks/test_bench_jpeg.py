"""benchmarks/bench_jpeg.py: the JPEG it picks fits the tokenizer's bit rate at the highest quality that does, and
its table holds what the metrics measure (tiny random model, tiny generated images)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import metrics
from tokenizer.assets import SAMPLES_DIR
from tokenizer.models import Tokenizer, TokenizerConfig
from tokenizer.quantizers import VQConfig

_SCRIPT = Path(__file__).parents[2] / "benchmarks" / "bench_jpeg.py"
_spec = importlib.util.spec_from_file_location("bench_jpeg", _SCRIPT)
bench_jpeg = sys.modules["bench_jpeg"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(bench_jpeg)


def _tiny_model() -> Tokenizer:
    """2x downsampling, 256 codes: 8 bits per 4 pixels = 2 bpp, a rate JPEG reaches on tiny images."""
    config = TokenizerConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                             quantizer=VQConfig(codebook_size=256, dim=4))  # fmt: skip
    return Tokenizer(config).eval()


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with noise, uint8 [H, W, 3]: JPEG's size grows steadily with quality on it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows / height, cols / width, 0.5 + 0.3 * np.sin(rows / 5.0 + seed)], axis=-1) * 200 + 20
    return (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)


def _pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def test_the_chosen_jpeg_fits_the_model_rate_at_the_highest_quality(one_thread):
    images = [("a", _pixels(_photo(48, 64, seed=1))), ("b", _pixels(_photo(40, 40, seed=2)))]
    rows = bench_jpeg.compare(_tiny_model(), images)
    assert [row.name for row in rows] == ["a", "b"]
    for row, (_, pixels) in zip(rows, images):
        target = math.log2(256) / 2**2
        assert row.model.bpp == target and (row.height, row.width) == tuple(pixels.shape[-2:])
        original = np.ascontiguousarray(pixels.add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy())
        bits = [8 * len(bench_jpeg.encode_jpeg(original, q)) / pixels[0].numel() for q in range(1, 96)]
        quality = row.jpeg_quality
        assert row.jpeg_fits and 1 < quality < 95  # the images are built so the answer lies inside the range
        assert row.jpeg.bpp == pytest.approx(bits[quality - 1]) and row.jpeg.bpp <= target
        assert all(b > target for b in bits[quality:])  # every higher quality overspends
        decoded = _pixels(np.array(Image.open(io.BytesIO(bench_jpeg.encode_jpeg(original, quality)))))
        assert row.jpeg.psnr == pytest.approx(metrics.psnr(pixels[None], decoded[None]).item(), abs=1e-4)
        assert row.jpeg.delta_e == pytest.approx(metrics.delta_e(pixels[None], decoded[None]).item(), abs=1e-4)
        assert row.jpeg.psnr > 20 and row.model.psnr < row.jpeg.psnr  # a random tokenizer reconstructs nothing


def test_a_rate_below_jpeg_quality_one_is_reported_as_over():
    image = _photo(16, 16, seed=3)
    choice = bench_jpeg.jpeg_at_rate(image, target_bpp=0.5)  # 16 bytes: less than a JPEG header
    assert not choice.fits and choice.quality == 1 and choice.data == bench_jpeg.encode_jpeg(image, 1)
    scores = bench_jpeg.Scores(bpp=2.0, psnr=20.0, ssim=0.5, delta_e=3.0, colour_cast=1.0)
    over = bench_jpeg.Row("x.png", 16, 16, scores, scores, jpeg_quality=1, jpeg_fits=False)
    fits = bench_jpeg.Row("y.png", 16, 16, scores, bench_jpeg.Scores(1.0, 30.0, 0.9, 1.0, 3.0), 40, True)
    table = bench_jpeg.to_markdown("tiny", [over, fits])
    assert "| x.png | 16x16 | 2.000 | 20.00 | 0.500 | 3.00 | 1.00 | 1 (over) |" in table
    assert "| **mean** |  | 2.000 | 20.00 | 0.500 | 3.00 | 1.00 |  | 1.500 | 25.00 | 0.700 | 2.00 | 2.00 |" in table
    assert "even JPEG quality 1 spends more bits" in table


def test_images_are_read_as_rgb_centre_cropped_and_the_card_names_them(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(_photo(37, 50, seed=4)[..., 0]).save(gray)  # mode L
    (whole,) = bench_jpeg.load_images([gray], size=None, factor=4)
    assert whole[0] == "gray.png" and whole[1].shape == (3, 36, 48)
    assert torch.equal(whole[1][0], whole[1][1]) and torch.equal(whole[1][0], whole[1][2])
    expected = torch.from_numpy(_photo(37, 50, seed=4)[..., 0]).float() / 127.5 - 1
    torch.testing.assert_close(whole[1][0], expected[0:36, 1:49], rtol=0, atol=0)
    assert bench_jpeg.load_images([gray], size=16, factor=4)[0][1].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="--size 18 .* factor 4"):
        bench_jpeg.load_images([gray], size=18, factor=4)

    (tmp_path / "card.json").write_text(json.dumps({"held_out": ["chelsea.png", "pan-chelsea.mp4", "absent.png"]}))
    assert bench_jpeg.held_out_samples(str(tmp_path)) == [SAMPLES_DIR / "chelsea.png"]
    with pytest.raises(FileNotFoundError, match="--images"):
        bench_jpeg.held_out_samples(str(tmp_path / "nowhere"))


def test_main_writes_the_table(tmp_path, capsys, one_thread):
    _tiny_model().save_pretrained(tmp_path / "tiny")
    for seed in (5, 6):
        Image.fromarray(_photo(24, 32, seed)).save(tmp_path / f"photo{seed}.png")
    out = tmp_path / "jpeg.md"
    argv = ["--model", str(tmp_path / "tiny"), "--images", str(tmp_path / "photo5.png"), str(tmp_path / "photo6.png"),
            "--size", "16", "--out", str(out)]  # fmt: skip
    assert bench_jpeg.main(argv) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    assert "vocabulary 256, 2x downsampling; 16x16 centre crops" in text
    assert "| photo5.png | 16x16 | 2.000 |" in text and "| photo6.png | 16x16 | 2.000 |" in text
