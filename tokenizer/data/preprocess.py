"""Preprocessing for tokenization: from an image file to pixels whose sides are multiples of the token size.

1. Decode to 8-bit RGB (``open_rgb``: grayscale, palette, RGBA, CMYK and 16-bit are converted).
2. ``resize``: scale so the shorter side is ``resize`` pixels (bicubic, antialiased).
3. ``size``: crop a ``size`` x ``size`` square (``crop="center"`` or ``"random"``, the random one seeded by the
   file's content hash so it is the same in every run); a shorter side below ``size`` is first scaled up to it.
   Without ``size``, the image is centre-cropped to the largest multiple of the downsampling factor.
An image smaller than one token (a side under the factor, with neither option set) is an error.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .images import ImageReadError, open_rgb, to_tensor


class TooSmallError(ImageReadError):
    """The image has fewer pixels along a side than one token covers."""


@dataclass(frozen=True)
class ImagePreprocess:
    resize: int | None = None  # shorter side in pixels after resizing; None keeps the size
    size: int | None = None  # square crop side; None keeps the aspect ratio (cropped to the factor)
    crop: str = "center"  # "center" or "random" (seeded by the file's content, reproducible)
    factor: int = 16  # the tokenizer's downsampling factor

    def __post_init__(self) -> None:
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")
        for name in ("resize", "size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value}")
        if self.size is not None and self.size % self.factor:
            raise ValueError(
                f"size={self.size} must be a multiple of the tokenizer's downsampling factor {self.factor}"
            )

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


def load_for_tokenization(path: str | Path, preprocess: ImagePreprocess) -> LoadedImage:
    """Read, convert and preprocess one image; raises ImageReadError (naming the file) when it cannot."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read {str(path)!r}: {err}") from err
    if not data:
        raise ImageReadError(f"{str(path)!r} is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    image = open_rgb(io.BytesIO(data), name=str(path))
    try:
        processed = preprocess.apply(image, seed=int(digest[:16], 16))
    except TooSmallError as err:
        raise TooSmallError(f"{str(path)!r}: {err}") from None
    return LoadedImage(to_tensor(processed), image.width, image.height, digest)
