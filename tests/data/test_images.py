"""Image discovery, decoding of every pixel mode, tensor conversion and crop policies, on images made here."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer.data import (
    CropPolicy,
    ImageReadError,
    find_media,
    load_sample,
    open_rgb,
    to_tensor,
    to_uint8,
)


def _save(array: np.ndarray, path: Path, mode: str | None = None, **params) -> Path:
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **params)
    return path


def _ramp(width: int, height: int, step: int = 1) -> np.ndarray:
    """RGB image whose red channel is ``x * step``, green ``y * step`` and blue a constant 77."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * step, y * step, np.full_like(x, 77)], axis=-1).astype(np.uint8)


def _rgb(path: Path | io.BytesIO) -> np.ndarray:
    image = open_rgb(path)
    assert image.mode == "RGB"
    return np.asarray(image)


# --- find_media: the image side -------------------------------------------------------------------


def test_find_media_searches_recursively_filters_sorts_and_deduplicates(tmp_path):
    tiny = np.zeros((2, 3, 3), np.uint8)
    (tmp_path / "a" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    wanted = [
        _save(tiny, tmp_path / "a" / "x.png"),
        _save(tiny, tmp_path / "a" / "deep" / "er" / "y.JPG", format="JPEG"),
        _save(tiny, tmp_path / "a" / "deep" / "z.Tiff", format="TIFF"),
        _save(tiny, tmp_path / "b" / "w.bmp"),
    ]
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "deep" / "weights.pt").write_bytes(b"\0")
    (tmp_path / "a" / "folder.png").mkdir()  # a folder with an image suffix is not a file
    lone = _save(tiny, tmp_path / "lone.webp")

    # The same folder twice, a file inside it named again, and a single file outside.
    found = find_media([tmp_path / "b", tmp_path / "a", str(tmp_path / "a"), wanted[0], lone])[0]
    assert found == sorted([*wanted, lone])
    assert all(isinstance(p, Path) for p in found)
    assert find_media([])[0] == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_media([empty])[0] == []


def test_find_media_names_a_missing_source(tmp_path):
    missing = tmp_path / "nowhere" / "photos"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_media([tmp_path, missing])


# --- open_rgb: pixel modes -------------------------------------------------------------------------


def test_rgb_png_is_returned_unchanged(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    assert np.array_equal(_rgb(_save(array, tmp_path / "rgb.png")), array)


def test_grayscale_and_bilevel_are_replicated_to_three_channels(tmp_path):
    gray = np.arange(0, 255, 17, dtype=np.uint8).reshape(3, 5)
    out = _rgb(_save(gray, tmp_path / "gray.png", mode="L"))
    assert np.array_equal(out, np.repeat(gray[..., None], 3, axis=-1))

    bits = Image.new("1", (3, 2))
    bits.putdata([0, 1, 0, 1, 1, 0])
    bits.save(tmp_path / "bits.png")
    expected = np.array([[0, 255, 0], [255, 255, 0]], np.uint8)
    assert np.array_equal(_rgb(tmp_path / "bits.png"), np.repeat(expected[..., None], 3, axis=-1))


def _palette_image() -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0]], np.uint8)
    indices = np.array([[0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 1]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.flatten().tolist() + [0] * (768 - palette.size))
    return image, palette, indices


def test_palette_without_transparency_maps_through_the_palette(tmp_path):
    image, palette, indices = _palette_image()
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(_rgb(tmp_path / "p.png"), palette[indices])


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_transparent_index_becomes_white(tmp_path, suffix):
    image, palette, indices = _palette_image()
    image.save(tmp_path / f"p{suffix}", transparency=1)
    assert Image.open(tmp_path / f"p{suffix}").mode == "P"
    expected = palette[indices]
    expected[indices == 1] = 255
    assert np.array_equal(_rgb(tmp_path / f"p{suffix}"), expected)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.random.default_rng(2).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # fully transparent, fully opaque
    out = _rgb(_save(rgba, tmp_path / "rgba.png", mode="RGBA")).astype(np.float64)
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    expected = rgba[..., :3].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
    assert np.abs(out - expected).max() <= 1.0
    assert np.array_equal(out[0, 0], [255, 255, 255])
    assert np.array_equal(out[0, 1], rgba[0, 1, :3])


def test_gray_alpha_is_composited_on_white(tmp_path):
    la = np.random.default_rng(3).integers(0, 256, (4, 6, 2), dtype=np.uint8)
    la[1, 2, 1], la[3, 5, 1] = 0, 255
    out = _rgb(_save(la, tmp_path / "la.png", mode="LA")).astype(np.float64)
    alpha = la[..., 1:].astype(np.float64) / 255.0
    expected = la[..., :1].astype(np.float64) * alpha + 255.0 * (1.0 - alpha)
    assert np.abs(out - expected).max() <= 1.0
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert np.array_equal(out[1, 2], [255, 255, 255])
    assert np.array_equal(out[3, 5], [la[3, 5, 0]] * 3)


def test_cmyk_converts_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (4, 1))
    cmyk.putdata([(0, 0, 0, 0), (0, 0, 0, 255), (255, 0, 0, 0), (0, 255, 255, 0)])
    cmyk.save(tmp_path / "cmyk.tif")
    assert Image.open(tmp_path / "cmyk.tif").mode == "CMYK"
    expected = np.array([[[255, 255, 255], [0, 0, 0], [0, 255, 255], [255, 0, 0]]], np.uint8)
    assert np.array_equal(_rgb(tmp_path / "cmyk.tif"), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_gray_keeps_the_top_eight_bits(tmp_path, suffix):
    values = np.array([[0, 255, 256, 4660, 32768, 65280, 65535]], np.uint16)
    path = _save(values, tmp_path / f"gray16{suffix}")
    assert Image.open(path).mode.startswith("I;16")
    expected = np.array([[0, 0, 1, 18, 128, 255, 255]], np.uint8)
    assert np.array_equal(_rgb(path), np.repeat(expected[..., None], 3, axis=-1))


def test_big_endian_sixteen_bit_gray(tmp_path):
    values = np.array([[0, 511, 4660, 65535]], ">u2")
    Image.frombytes("I;16B", (4, 1), values.tobytes()).save(tmp_path / "gray16b.tif")
    assert Image.open(tmp_path / "gray16b.tif").mode == "I;16B"
    assert np.array_equal(_rgb(tmp_path / "gray16b.tif")[..., 1], [[0, 1, 18, 255]])


def test_int32_gray_uses_the_sixteen_bit_range(tmp_path):
    values = np.array([[0, 255, 256, 40000, 65535, 70000]], np.int32)
    path = _save(values, tmp_path / "int32.tif")
    assert Image.open(path).mode == "I"
    assert np.array_equal(_rgb(path)[..., 2], [[0, 0, 1, 156, 255, 255]])


def test_negative_int32_gray_is_black_not_white(tmp_path):
    path = _save(np.array([[-100, -1, 0, 512]], np.int32), tmp_path / "signed.tif")
    assert Image.open(path).mode == "I"
    assert np.array_equal(_rgb(path)[..., 0], [[0, 0, 0, 2]])


def test_float_gray_is_clipped_to_the_eight_bit_range(tmp_path):
    values = np.array([[-5.0, 0.0, 12.0, 200.0, 255.0, 300.0]], np.float32)
    path = _save(values, tmp_path / "float.tif")
    assert Image.open(path).mode == "F"
    assert np.array_equal(_rgb(path)[..., 0], [[0, 0, 12, 200, 255, 255]])


# EXIF orientation -> the numpy operation that shows the picture upright.
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    6: lambda a: np.rot90(a, -1),  # rotate 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),  # rotate 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    array = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(array, tmp_path / "oriented.png", exif=exif)
    assert np.array_equal(_rgb(path), ORIENTATIONS[orientation](array))


def test_animated_gif_gives_its_first_frame(tmp_path):
    colours = [(0, 0, 255), (255, 0, 0), (0, 255, 0)]
    frames = [Image.new("RGB", (5, 4), colour) for colour in colours]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    with Image.open(tmp_path / "anim.gif") as gif:
        assert gif.n_frames == 3
    out = _rgb(tmp_path / "anim.gif")
    assert out.shape == (4, 5, 3)
    assert (out == np.array(colours[0], np.uint8)).all()


# --- open_rgb: unreadable files --------------------------------------------------------------------


def _png_bytes(width: int = 29, height: int = 23) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: _png_bytes()[: len(_png_bytes()) // 2], id="truncated"),
        pytest.param(lambda: b"this is a text file, not a picture\n" * 5, id="not-an-image"),
        pytest.param(lambda: b"", id="empty"),
    ],
)
def test_unreadable_files_raise_image_read_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken name.png"
    path.write_bytes(content())
    with pytest.raises(ImageReadError, match="broken name.png") as info:
        open_rgb(path)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ImageReadError, match="broken name.png"):
        load_sample(path, CropPolicy(size=8), seed=0)


def test_file_objects_are_read_and_errors_use_the_given_name():
    array = np.random.default_rng(5).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    buffer.seek(0)
    assert np.array_equal(np.asarray(open_rgb(buffer, name="ok.png")), array)
    with pytest.raises(ImageReadError, match="member.png in archive.tar"):
        open_rgb(io.BytesIO(b"garbage"), name="member.png in archive.tar")


@pytest.mark.filterwarnings("ignore:Truncated File Read:UserWarning")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_truncation_anywhere_gives_an_image_or_an_image_read_error(fmt):
    """Cutting a file at any of ~40 points either still decodes (only trailer bytes lost) or raises
    ImageReadError, never another exception type; cutting the payload in half always fails."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (23, 29, 3), dtype=np.uint8)).save(buffer, fmt)
    data = buffer.getvalue()
    for cut in sorted({*np.linspace(0, len(data) - 1, 37).astype(int).tolist(), 1, len(data) - 2}):
        try:
            image = open_rgb(io.BytesIO(data[:cut]), name=f"cut-{cut}")
        except ImageReadError as err:
            assert f"cut-{cut}" in str(err)
        else:
            assert image.mode == "RGB" and image.size == (29, 23)
    with pytest.raises(ImageReadError):
        open_rgb(io.BytesIO(data[: len(data) // 2]), name="half")


# --- tensors ---------------------------------------------------------------------------------------


def _all_values_image() -> np.ndarray:
    """16 x 16 RGB holding every uint8 value in each channel, in three different orders."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.stack([values, values.T, values[::-1]], axis=-1)


def test_to_tensor_layout_and_values():
    array = _all_values_image()[:7, :13]  # an awkward, non-square crop
    tensor = to_tensor(Image.fromarray(np.ascontiguousarray(array)))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 7, 13)
    expected = torch.from_numpy(array.astype(np.float64) / 127.5 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(tensor.double(), expected, rtol=0, atol=1e-7)
    full = to_tensor(Image.fromarray(_all_values_image()))
    assert full.min().item() == -1.0 and full.max().item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_uint8_round_trip_is_exact(dtype):
    # Even bf16 keeps every level: near +-1 its half-ulp is 2**-9, a quarter of a level (1 / 127.5).
    array = _all_values_image()
    back = to_uint8(to_tensor(Image.fromarray(array)).to(dtype))
    assert back.dtype == np.uint8 and back.shape == array.shape
    assert np.array_equal(back, array)


def test_to_uint8_clips_and_rounds():
    pixels = torch.tensor([-3.0, -1.0, -1.0 + 0.4 / 127.5, -1.0 + 0.6 / 127.5, 0.0, 1.0, 1.5], requires_grad=True)
    out = to_uint8(pixels.view(1, 1, 7).expand(3, 1, 7))
    assert out.shape == (1, 7, 3)
    assert out[0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]


# --- CropPolicy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"size": 0}, "size"), ({"size": -4}, "size"), ({"max_zoom": 0.99}, "max_zoom"), ({"max_zoom": 0.0}, "max_zoom")],
)
def test_invalid_policy_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CropPolicy(**kwargs)


@pytest.mark.parametrize(
    ("width", "height", "size", "max_zoom"),
    [(64, 48, 16, 1.0), (7, 1000, 5, 1.0), (3, 2, 16, 1.0), (1, 50, 8, 1.0), (97, 31, 17, 2.5), (13, 13, 13, 1.3)],
)
def test_output_is_exactly_size_by_size(width, height, size, max_zoom):
    image = Image.fromarray(_ramp(width, height))
    for seed in range(5):
        for random_crop in (True, False):
            policy = CropPolicy(size=size, random_crop=random_crop, max_zoom=max_zoom)
            out = policy.apply(image, random.Random(seed))
            assert out.size == (size, size) and out.mode == "RGB"


def test_small_images_are_upscaled_and_flat_colour_survives_resampling():
    image = Image.new("RGB", (3, 2), (17, 200, 99))
    for seed in range(4):
        out = np.asarray(CropPolicy(size=16, max_zoom=1.7).apply(image, random.Random(seed)))
        assert out.shape == (16, 16, 3)
        assert (out == np.array([17, 200, 99], np.uint8)).all()


def test_centre_crop_without_resize_takes_the_middle_window():
    for width, height, size in [(9, 5, 5), (8, 5, 5), (5, 12, 5), (6, 6, 6)]:
        array = _ramp(width, height, step=10)
        out = np.asarray(
            CropPolicy(size=size, random_crop=False, flip=False).apply(Image.fromarray(array), random.Random(0))
        )
        left, top = int(out[0, 0, 0]) // 10, int(out[0, 0, 1]) // 10
        assert abs(left - (width - size) / 2) <= 0.5 and abs(top - (height - size) / 2) <= 0.5
        assert np.array_equal(out, array[top : top + size, left : left + size])


def test_centre_crop_after_downscaling_is_centred_on_the_original():
    array = _ramp(64, 32, step=4)  # red = 4 * x
    out = np.asarray(CropPolicy(size=16, random_crop=False, flip=False).apply(Image.fromarray(array), random.Random(3)))
    red = out[..., 0].astype(np.float64) / 4.0
    assert abs(red.mean() - 31.5) < 0.5  # the centre of x = 0..63
    assert np.all(np.diff(red, axis=1) > 0)  # not mirrored
    assert abs((red[:, -1] - red[:, 0]).mean() - 30.0) < 1.0  # 15 output pixels span 30 input pixels


def test_random_crop_is_a_window_of_the_image_possibly_mirrored():
    width, height, size = 23, 17, 17  # the shorter side equals size: no resampling, exact windows
    array = _ramp(width, height, step=10)
    policy = CropPolicy(size=size, random_crop=True, flip=True)
    lefts, flips = set(), 0
    for seed in range(100):
        out = np.asarray(policy.apply(Image.fromarray(array), random.Random(seed)))
        flipped = out[0, 0, 0] > out[0, -1, 0]
        left = int(out[0, -1 if flipped else 0, 0]) // 10
        window = array[:, left : left + size]
        assert np.array_equal(out, window[:, ::-1] if flipped else window)
        lefts.add(left)
        flips += int(flipped)
    assert lefts == set(range(width - size + 1))
    assert 30 <= flips <= 70


def test_no_flip_policy_never_mirrors():
    array = _ramp(40, 20, step=5)
    policy = CropPolicy(size=20, random_crop=True, flip=False)
    for seed in range(30):
        out = np.asarray(policy.apply(Image.fromarray(array), random.Random(seed))).astype(int)
        assert np.all(np.diff(out[..., 0], axis=1) == 5)


def test_zoom_varies_with_the_seed_within_its_range():
    array = _ramp(40, 30, step=6)  # red = 6 * x
    spans = []
    for seed in range(40):
        out = np.asarray(
            CropPolicy(size=16, max_zoom=2.0, flip=False).apply(Image.fromarray(array), random.Random(seed))
        )
        red = out[8, :, 0].astype(np.float64) / 6.0  # a middle row, in input pixels
        spans.append(red[-2] - red[1])  # 13 output pixels, away from the crop border
    # zoom z resizes the 30-pixel short side to 16 z: 13 output pixels span 13 * 30 / (16 z) input pixels.
    assert min(spans) >= 13 * 30 / 32 - 0.5 and max(spans) <= 13 * 30 / 16 + 0.5
    assert max(spans) - min(spans) > 6.0
    fixed = CropPolicy(size=16, max_zoom=1.0, flip=False)
    red = np.asarray(fixed.apply(Image.fromarray(array), random.Random(0)))[8, :, 0].astype(np.float64) / 6.0
    assert abs((red[-2] - red[1]) - 13 * 30 / 16) < 0.5


@pytest.mark.parametrize("max_zoom", [1.0, 1.6])
def test_policy_is_deterministic_for_a_seed(max_zoom):
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    policy = CropPolicy(size=24, max_zoom=max_zoom)
    outs = [np.asarray(policy.apply(image, random.Random(seed))) for seed in (11, 11, 12, 13, 14)]
    assert np.array_equal(outs[0], outs[1])
    assert any(not np.array_equal(outs[0], other) for other in outs[2:])


# --- load_sample -----------------------------------------------------------------------------------


def test_load_sample_gives_the_exact_window_as_a_tensor(tmp_path):
    array = _ramp(11, 7, step=20)
    path = _save(array, tmp_path / "ramp.png")
    sample = load_sample(path, CropPolicy(size=7, random_crop=False, flip=False), seed=123)
    assert sample.dtype == torch.float32 and sample.shape == (3, 7, 7)
    expected = torch.from_numpy(array[:, 2:9].astype(np.float64) / 127.5 - 1.0).permute(2, 0, 1)
    torch.testing.assert_close(sample.double(), expected, rtol=0, atol=1e-7)


def test_load_sample_is_a_function_of_the_seed(tmp_path):
    path = _save(np.random.default_rng(8).integers(0, 256, (40, 50, 3), dtype=np.uint8), tmp_path / "noise.png")
    policy = CropPolicy(size=16, max_zoom=1.5)
    a, b = load_sample(path, policy, seed=5), load_sample(path, policy, seed=5)
    assert torch.equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0
    others = [load_sample(path, policy, seed=s) for s in (6, 7, 8)]
    assert any(not torch.equal(a, other) for other in others)
