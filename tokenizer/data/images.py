"""Reading images into model-ready tensors: discovery, mode conversion, deterministic augmentation.

Pixels leave this module as fp32 ``[3, H, W]`` in ``[-1, 1]``, the layout and range of the Tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .colour import random_chroma

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageReadError(ValueError):
    """An image file that cannot be turned into pixels; the message names the file and the reason."""


def open_rgb(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode a file (path or open binary file) into an 8-bit RGB image, whatever its mode.

    Grayscale, palette, CMYK and 16-bit images are converted; transparency is composited on white;
    EXIF orientation is applied. Animated images give their first frame. Errors name ``name`` (default:
    the path).
    """
    try:
        with Image.open(source) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError as err:
        raise ImageReadError(f"cannot read image {name or str(source)!r}: not a recognised image format") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {name or str(source)!r}: {err}") from err


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) gray: keep the top 8 bits of the 16-bit range.
        gray = np.asarray(image).astype(np.int64).clip(0, 65535) >> 8  # signed "I": negatives are black
        image = Image.fromarray(gray.clip(0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> fp32 ``[3, H, W]`` in ``[-1, 1]``."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[-1, 1]`` -> uint8 ``[H, W, 3]`` (values outside the range are clipped)."""
    return pixels.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True)
class CropPolicy:
    """How an image becomes a ``size`` x ``size`` training or evaluation sample.

    The shorter side is resized to ``size * zoom`` with ``zoom`` drawn uniformly from ``[1, max_zoom]``
    (bicubic, antialiased), then a ``size`` square is cropped (random or centred) and, with probability
    one half, mirrored. ``load_sample`` then turns the hues of a ``chroma_jitter`` share of the samples
    (``colour.random_chroma``).
    """

    size: int = 256
    random_crop: bool = True
    flip: bool = True
    max_zoom: float = 1.0
    chroma_jitter: float = 0.0  # probability that a sample's hues turn by a random angle (tokenizer.data.colour)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be at least 1, got {self.size}")
        if self.max_zoom < 1.0:
            raise ValueError(f"max_zoom must be >= 1, got {self.max_zoom}")
        if not 0.0 <= self.chroma_jitter <= 1.0:
            raise ValueError(f"chroma_jitter must lie in [0, 1], got {self.chroma_jitter}")

    def apply(self, image: Image.Image, rng: random.Random) -> Image.Image:
        zoom = rng.uniform(1.0, self.max_zoom) if self.max_zoom > 1.0 else 1.0
        width, height = image.size
        scale = self.size * zoom / min(width, height)
        new_size = (max(self.size, round(width * scale)), max(self.size, round(height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=None)
        width, height = image.size
        if self.random_crop:
            left, top = rng.randint(0, width - self.size), rng.randint(0, height - self.size)
        else:
            left, top = (width - self.size) // 2, (height - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


def load_sample(path: str | Path, policy: CropPolicy, seed: int) -> torch.Tensor:
    """One augmented sample of ``path``: fp32 ``[3, size, size]`` in ``[-1, 1]``; the same for the same seed."""
    rng = random.Random(seed)
    pixels = to_tensor(policy.apply(open_rgb(path), rng))
    return random_chroma(pixels, rng, policy.chroma_jitter)
