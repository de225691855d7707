"""The pixel budget (``tokenizer.data.pixel_budget``): sizes read from the header, downscale or skip, never a
DecompressionBombError."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tokenizer.data import pixel_budget
from tokenizer.data.images import ImageReadError
from tokenizer.data.items import InputReader, VideoSampling
from tokenizer.data.pixel_budget import TooLargeError, fit_to_budget, open_within_budget
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width x height`` but holds almost no pixel data: decoding it fails (truncated),
    so a ``too_large`` answer proves that nothing was decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _photo(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("width", "height", "budget"), [(12000, 12000, 1 << 24), (4000, 3000, 1 << 24), (101, 7, 300), (997, 13, 5000)]
)
def test_fit_keeps_the_aspect_ratio_within_the_budget(width, height, budget):
    w, h = fit_to_budget(width, height, budget)
    assert w * h <= budget
    assert (w + 1) * (h + 1) > budget  # the largest such size (one more on each side overflows)
    assert abs(w / h - width / height) <= width / height * (1 / h + 1 / w)  # aspect kept up to rounding
    assert fit_to_budget(12000, 12000, 1 << 24) == (4096, 4096)


def test_fit_with_a_side_clamped_to_one():
    assert fit_to_budget(10_000, 1, 100) == (100, 1)
    assert fit_to_budget(3, 10_000, 100) == (1, 100)


def test_skip_reads_only_the_header_of_a_12000_square_image():
    data = _png_header_only(12000, 12000)
    with pytest.raises(TooLargeError, match=r"12000x12000 = 144,000,000 pixels is over the budget of 16,777,216"):
        open_within_budget(data, "huge.png", 1 << 24, "skip")
    with pytest.raises(ImageReadError, match="truncated"):  # decoding it really would fail: nothing was decoded
        open_within_budget(data, "huge.png", None)


def test_beyond_pillows_bomb_limit_is_too_large_in_every_mode(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # Pillow refuses > 800 pixels
    data = _photo(30, 30)
    for budget, mode in ((None, "downscale"), (10_000, "downscale"), (100, "skip")):
        with pytest.raises(TooLargeError, match="too large to decode safely"):
            open_within_budget(data, "bomb.png", budget, mode)


def test_downscale_is_a_lanczos_resize_to_the_budget():
    data = _photo(60, 40, seed=3)
    budgeted = open_within_budget(data, "photo.png", 600, "downscale")
    assert (budgeted.width, budgeted.height) == (60, 40)
    assert budgeted.image.size == (30, 20) and budgeted.scale == pytest.approx(math.sqrt(600 / 2400))
    expected = Image.open(io.BytesIO(data)).convert("RGB").resize((30, 20), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(budgeted.image), np.asarray(expected))


def test_within_the_budget_nothing_changes():
    data = _photo(20, 10)
    budgeted = open_within_budget(data, "photo.png", 200, "skip")
    assert budgeted.scale is None and budgeted.image.size == (20, 10)
    assert np.array_equal(np.asarray(budgeted.image), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_preprocess_validates_the_budget():
    with pytest.raises(ValueError, match="max_pixels"):
        ImagePreprocess(max_pixels=0)
    with pytest.raises(ValueError, match="too_large"):
        ImagePreprocess(too_large="crop")
    assert ImagePreprocess().max_pixels == pixel_budget.DEFAULT_MAX_PIXELS == 16_777_216


def test_reader_records_the_downscale_and_reports_skips(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(_photo(64, 32, seed=5))
    sampling = VideoSampling()

    downscale = ImagePreprocess(factor=4, max_pixels=512)  # 64x32 -> 32x16
    item = InputReader([path], downscale, sampling, videos=False)[0]
    assert item.record["kind"] == "image" and (item.record["width"], item.record["height"]) == (64, 32)
    assert item.record["scaled_size"] == [32, 16] and item.record["scale"] == 0.5
    assert tuple(item.pixels.shape) == (3, 16, 32)
    assert item.pixels.equal(load_for_tokenization(path, downscale).pixels)

    item = InputReader([path], ImagePreprocess(factor=4, max_pixels=512, too_large="skip"), sampling, False)[0]
    assert item.pixels is None and item.record["kind"] == "too_large"
    assert "wide.png" in item.record["error"] and "64x32 = 2,048 pixels" in item.record["error"]

    item = InputReader([path], ImagePreprocess(factor=4, max_pixels=None), sampling, videos=False)[0]
    assert "scale" not in item.record and tuple(item.pixels.shape) == (3, 32, 64)
