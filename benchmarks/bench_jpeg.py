"""A tokenizer's reconstructions beside JPEG at the same bit rate, on held-out photos.

The tokenizer spends ``bpp = tokens * log2(codebook_size) / pixels`` bits per pixel (``log2(K) / f^2`` for a
``K``-code, ``f``-times downsampling model; residual models count each depth's token). For each image this
script picks the highest Pillow JPEG quality in ``1..95`` (``optimize=True``, Pillow's default 4:2:0 chroma)
whose whole file, headers included, is at most that many bits per pixel, and measures both reconstructions
against the original with ``tokenizer.metrics``: PSNR, SSIM, ``delta_e`` (mean CIELAB Delta E76) and
``colour_cast`` (Delta E76 of 8 x 8 tile means). Both are compared as 8-bit images, as a user sees them.

Images: by default the photos the model's ``card.json`` lists under ``held_out`` that ship in
``tokenizer/assets/samples``; grayscale photos are read as RGB for both coders. At ``--size S`` (256) each is
resized (shorter side to ``S``, bicubic) and centre-cropped to ``S x S`` as ``tokenizer.evaluation`` does; with
``--full-size`` the whole image is centre-cropped to a multiple of the model's downsample factor.

    python benchmarks/bench_jpeg.py --model default [--model PATH ...] [--images DIR_OR_FILES ...]
                                    [--size 256] [--full-size] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent.parent))  # the repository root, when run as a script

from tokenizer import metrics
from tokenizer._atomic import write_text_atomically
from tokenizer.assets import SAMPLES_DIR
from tokenizer.data import IMAGE_EXTENSIONS, CropPolicy, load_sample, open_rgb, to_tensor, to_uint8
from tokenizer.data.items import crop_to_factor
from tokenizer.data.sources import collect_inputs
from tokenizer.models import load_tokenizer
from tokenizer.models.tokenizer import resolve_pretrained

MAX_QUALITY = 95  # Pillow's advice: above 95 JPEG grows without looking better


@dataclass(frozen=True)
class Scores:
    """One reconstruction of one image: its rate and its quality against the original."""

    bpp: float
    psnr: float
    ssim: float
    delta_e: float
    colour_cast: float


@dataclass(frozen=True)
class JpegChoice:
    """The JPEG chosen for a bit budget: ``quality``, the file, and whether it fits (False: even quality 1
    spends more bits than the budget, and ``data`` is that quality-1 file)."""

    quality: int
    data: bytes
    fits: bool


@dataclass(frozen=True)
class Row:
    name: str
    height: int
    width: int
    model: Scores
    jpeg: Scores
    jpeg_quality: int
    jpeg_fits: bool


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """uint8 ``[H, W, 3]`` -> the bytes of a Pillow JPEG at ``quality`` with optimised Huffman tables."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def jpeg_at_rate(image: np.ndarray, target_bpp: float) -> JpegChoice:
    """The highest JPEG quality in ``1..95`` whose file of uint8 ``[H, W, 3]`` ``image`` spends at most
    ``target_bpp`` bits per pixel (``8 * bytes / (H * W)``). Qualities are tried from 95 down, so the answer is
    the highest one even where file size is not monotone in quality."""
    pixels = image.shape[0] * image.shape[1]
    for quality in range(MAX_QUALITY, 0, -1):
        data = encode_jpeg(image, quality)
        if 8 * len(data) / pixels <= target_bpp:
            return JpegChoice(quality, data, fits=True)
    return JpegChoice(1, data, fits=False)


def _as_8bit(pixels: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` in ``[-1, 1]`` rounded to the 256 levels of an 8-bit image (clipped)."""
    return torch.from_numpy(to_uint8(pixels)).permute(2, 0, 1).float() / 127.5 - 1


def _scores(original: torch.Tensor, reconstruction: torch.Tensor, bpp: float) -> Scores:
    x, y = original[None], reconstruction[None]
    return Scores(
        bpp=bpp,
        psnr=metrics.psnr(x, y).item(),
        ssim=metrics.ssim(x, y).item(),
        delta_e=metrics.delta_e(x, y).item(),
        colour_cast=metrics.colour_cast(x, y).item(),
    )


@torch.no_grad()
def model_scores(model: torch.nn.Module, pixels: torch.Tensor) -> Scores:
    """Reconstruct ``pixels`` (fp32 ``[3, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of the model's
    downsample factor) with ``model`` (``encode`` then ``decode``); both are scored as 8-bit images."""
    original = _as_8bit(pixels)
    height, width = original.shape[-2:]
    device = next(model.parameters()).device
    indices = model.encode(original[None].to(device))
    decoded = model.decode(indices)[0].float().cpu()
    bpp = indices.numel() * math.log2(model.codebook_size) / (height * width)
    return _scores(original, _as_8bit(decoded), bpp)


@torch.no_grad()
def compare_image(model: torch.nn.Module, name: str, pixels: torch.Tensor) -> Row:
    """``model_scores`` of ``pixels`` beside JPEG's at the model's bits per pixel."""
    original = _as_8bit(pixels)  # what JPEG sees too
    height, width = original.shape[-2:]
    scores = model_scores(model, original)
    choice = jpeg_at_rate(to_uint8(original), scores.bpp)
    jpeg = to_tensor(Image.open(io.BytesIO(choice.data)).convert("RGB"))
    return Row(
        name=name,
        height=height,
        width=width,
        model=scores,
        jpeg=_scores(original, jpeg, 8 * len(choice.data) / (height * width)),
        jpeg_quality=choice.quality,
        jpeg_fits=choice.fits,
    )


def compare(model: torch.nn.Module, images: Sequence[tuple[str, torch.Tensor]]) -> list[Row]:
    """``compare_image`` for each ``(name, [3, H, W] pixels)`` of ``images``, in order."""
    return [compare_image(model, name, pixels) for name, pixels in images]


def held_out_samples(model: str) -> list[Path]:
    """The photos (not the clips) the card of ``model`` (a shipped name or a folder) lists under ``held_out``
    that ship in ``tokenizer/assets/samples``. Raises FileNotFoundError when there is no card or none of them ships."""
    card = resolve_pretrained(model) / "card.json"
    if not card.is_file():
        raise FileNotFoundError(f"{card} does not exist: name the images with --images")
    names = json.loads(card.read_text()).get("held_out", [])
    paths = [SAMPLES_DIR / name for name in names if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    paths = [path for path in paths if path.is_file()]
    if not paths:
        raise FileNotFoundError(f"none of the held-out images of {card} ({names}) is in {SAMPLES_DIR}; use --images")
    return paths


def load_images(paths: Sequence[Path], size: int | None, factor: int) -> list[tuple[str, torch.Tensor]]:
    """``(file name, fp32 [3, H, W] in [-1, 1])`` per path, read as RGB: resized (shorter side to ``size``) and
    centre-cropped to ``size x size``, or with ``size=None`` whole, centre-cropped to multiples of ``factor``."""
    if size is not None and size % factor:
        raise ValueError(f"--size {size} is not a multiple of the model's downsample factor {factor}")
    images = []
    for path in paths:
        if size is None:
            pixels = crop_to_factor(to_tensor(open_rgb(path)), factor)
        else:
            pixels = load_sample(path, CropPolicy(size, random_crop=False, flip=False), seed=0)
        if min(pixels.shape[-2:]) == 0:
            raise ValueError(f"{path} is smaller than the model's downsample factor {factor}")
        images.append((path.name, pixels))
    return images


_COLUMNS = ("bpp", "PSNR", "SSIM", "ΔE", "cast")


def _cells(scores: Scores) -> list[str]:
    return [f"{scores.bpp:.3f}", f"{scores.psnr:.2f}", f"{scores.ssim:.3f}", f"{scores.delta_e:.2f}",
            f"{scores.colour_cast:.2f}"]  # fmt: skip


def _mean(scores: Sequence[Scores]) -> Scores:
    return Scores(*(float(np.mean(column)) for column in zip(*(astuple(s) for s in scores))))


def to_markdown(title: str, rows: Sequence[Row]) -> str:
    """A markdown section: one row per image and a mean row, the model's figures beside JPEG's."""
    header = ["image", "size", *_COLUMNS, "JPEG q", *(f"JPEG {c}" for c in _COLUMNS)]
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        quality = str(row.jpeg_quality) if row.jpeg_fits else "1 (over)"
        lines.append(
            "| "
            + " | ".join([row.name, f"{row.width}x{row.height}", *_cells(row.model), quality, *_cells(row.jpeg)])
            + " |"
        )
    if rows:
        means = [_mean([r.model for r in rows]), _mean([r.jpeg for r in rows])]
        lines.append("| " + " | ".join(["**mean**", "", *_cells(means[0]), "", *_cells(means[1])]) + " |")
    lines.append("")
    lines.append("ΔE: mean CIE76 Delta E per pixel; cast: Delta E76 of 8x8 tile means (colour, not texture).")
    if any(not row.jpeg_fits for row in rows):
        lines.append("1 (over): even JPEG quality 1 spends more bits than the tokenizer; its figures are at that rate.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="shipped name or folder (repeatable; default: default)")
    parser.add_argument("--images", nargs="+", help="image files or folders (default: the model card's held_out)")
    parser.add_argument("--size", type=int, default=256, help="centre-crop side after resizing (default 256)")
    parser.add_argument("--full-size", action="store_true", help="whole images, cropped to the downsample factor")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    sections = []
    for name in args.model or ["default"]:
        model = load_tokenizer(name)
        factor = model.downsample_factor
        paths = collect_inputs(args.images) if args.images else held_out_samples(name)
        images = load_images(paths, None if args.full_size else args.size, factor)
        crop = "whole images" if args.full_size else f"{args.size}x{args.size} centre crops"
        title = f"{name}: vocabulary {model.codebook_size}, {factor}x downsampling; {crop}"
        sections.append(to_markdown(title, compare(model, images)))
        print(sections[-1], flush=True)
    text = "\n".join(sections)
    if args.out:
        write_text_atomically(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
