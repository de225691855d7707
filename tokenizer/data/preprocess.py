"""Preprocessing for tokenization: from an image file to pixels whose sides are multiples of the token size.

1. Decode to 8-bit RGB (``open_rgb``: grayscale, palette, RGBA, CMYK and 16-bit are converted). An image over
   ``max_pixels`` (16 MP by default, read from the header first) is downscaled to fit or refused
   (``too_large``; see ``pixel_budget``).
2. ``resize``: scale so the shorter side is ``resize`` pixels (bicubic, antialiased).
3. ``size``: crop a ``size`` x ``size`` square (``crop="center"`` or ``"random"``, the random one seeded by the
   file's content hash so it is the same in every run); a shorter side below ``size`` (after ``resize``) is
   first scaled up to it (bicubic; ``scales_up`` says when, and the manifest row records ``"upscaled": true``).
   Without ``size``, the image is centre-cropped to the largest multiple of the downsampling factor.
An image smaller than one token (a side under the factor, with neither option set) is an error.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .files import read_input_file
from .images import ImageReadError, to_tensor
from .pixel_budget import DEFAULT_MAX_PIXELS, TOO_LARGE_POLICIES, open_within_budget


class TooSmallError(ImageReadError):
    """The image has fewer pixels along a side than one token covers."""


@dataclass(frozen=True)
class ImagePreprocess:
    resize: int | None = None  # shorter side in pixels after resizing; None keeps the size
    size: int | None = None  # square crop side; None keeps the aspect ratio (cropped to the factor)
    crop: str = "center"  # "center" or "random" (seeded by the file's content, reproducible)
    factor: int = 16  # the tokenizer's downsampling factor
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # budget of the stored image (pixel_budget); None: no budget
    too_large: str = "downscale"  # over max_pixels: "downscale" to fit, or "skip" (errors.jsonl, too_large)

    def __post_init__(self) -> None:
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive number of pixels or None, got {self.max_pixels}")
        if self.too_large not in TOO_LARGE_POLICIES:
            raise ValueError(f"too_large must be one of {TOO_LARGE_POLICIES}, got {self.too_large!r}")
        for name in ("resize", "size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value}")
        if self.size is not None and self.size % self.factor:
            raise ValueError(
                f"size={self.size} must be a multiple of the tokenizer's downsampling factor {self.factor}"
            )

    def scales_up(self, width: int, height: int) -> bool:
        """Whether ``apply`` enlarges a ``width`` x ``height`` image to reach the ``size`` crop: its shorter side,
        after ``resize``, is below ``size``."""
        shorter = self.resize if self.resize is not None else min(width, height)
        return self.size is not None and shorter < self.size

    def apply(self, image: Image.Image, seed: int) -> Image.Image:
        if self.resize is not None:
            image = _scale_shorter_side(image, self.resize)
        width, height = image.size
        if self.size is not None:
            if min(width, height) < self.size:
                image = _scale_shorter_side(image, self.size)
                width, height = image.size
            crop_w = crop_h = self.size
        else:
            crop_w, crop_h = width // self.factor * self.factor, height // self.factor * self.factor
            if crop_w == 0 or crop_h == 0:
                raise TooSmallError(f"{width}x{height} pixels is smaller than one {self.factor}x{self.factor} token")
        if self.crop == "random":
            rng = random.Random(seed)
            left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        else:
            left, top = (width - crop_w) // 2, (height - crop_h) // 2
        if (left, top, crop_w, crop_h) != (0, 0, width, height):
            image = image.crop((left, top, left + crop_w, top + crop_h))
        return image


def _scale_shorter_side(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


@dataclass
class LoadedImage:
    pixels: torch.Tensor  # fp32 [3, H, W] in [-1, 1]
    width: int  # of the file, before preprocessing
    height: int
    sha256: str  # of the file's bytes
    scale: float | None = None  # downscaled to the pixel budget by this factor (pixel_budget), else None
    scaled_size: tuple[int, int] | None = None  # (width, height) after that downscale


def load_for_tokenization(path: str | Path, preprocess: ImagePreprocess, max_bytes: int | None = None) -> LoadedImage:
    """Read, convert and preprocess one image; raises ImageReadError (naming the file) when it cannot, and
    InputFileError when ``path`` is not a regular file or is over ``max_bytes`` (None: no limit)."""
    return decode_for_tokenization(read_input_file(path, max_bytes), str(path), preprocess)


def decode_for_tokenization(data: bytes, name: str, preprocess: ImagePreprocess) -> LoadedImage:
    """``load_for_tokenization`` of bytes already read (a tar member, a Parquet cell); errors name ``name``."""
    if not data:
        raise ImageReadError(f"{name!r} is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    budgeted = open_within_budget(data, name, preprocess.max_pixels, preprocess.too_large)
    image = budgeted.image
    try:
        processed = preprocess.apply(image, seed=int(digest[:16], 16))
    except TooSmallError as err:
        raise TooSmallError(f"{name!r}: {err}") from None
    scaled_size = None if budgeted.scale is None else image.size
    return LoadedImage(to_tensor(processed), budgeted.width, budgeted.height, digest, budgeted.scale, scaled_size)
