"""The pixel budget of tokenization: the most pixels an image may have as stored (``--max-pixels``).

The encoder's memory grows with the pixel count (the first convolution alone writes ``ch * 4`` bytes per
pixel: 18 GB for a 12000x12000 photo at ``ch=32``), so an image over the budget is never handed over
whole. Its size is read from the file header before any pixel is decoded (Pillow opens lazily), then:

- ``too_large="downscale"`` (the default): decoded, then resized (Lanczos, antialiased, the aspect ratio
  kept) to the largest ``w x h`` with ``w * h <= max_pixels``: ``s = sqrt(max_pixels / (W * H))``,
  ``w = floor(W * s)``, ``h = floor(H * s)``. The manifest row keeps the file's ``width``/``height`` and adds
  ``scale`` (``s``) and ``scaled_size`` (``[w, h]``).
- ``too_large="skip"``: nothing is decoded; the file goes to errors.jsonl with kind ``too_large``.

Pillow's decompression-bomb guard (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 179 MP by default) stays the ceiling
of what is ever decoded, so decoding an image to downscale it holds at most about 0.5 GB of RGB; a file
beyond it is ``too_large`` in both modes (and with the budget off), never a DecompressionBombError.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .images import ImageReadError, open_rgb

DEFAULT_MAX_PIXELS = 1 << 24  # 16,777,216 = 4096 x 4096: peak memory of the default model stays bounded
TOO_LARGE_POLICIES = ("downscale", "skip")


class TooLargeError(ImageReadError):
    """The image has more pixels than the budget (``skip``) or than Pillow decodes safely."""


@dataclass
class BudgetedImage:
    image: Image.Image  # 8-bit RGB, EXIF orientation applied, within the budget
    width: int  # of the file (oriented), before any downscale
    height: int
    scale: float | None = None  # s of the module docstring when downscaled, else None


def fit_to_budget(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest ``(w, h)`` with ``w * h <= max_pixels`` and the aspect ratio of ``width x height`` (sides
    rounded down, at least 1)."""
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    if w * h > max_pixels:  # a side clamped to 1, or float rounding at the boundary: trim the longer side
        w, h = (max(1, max_pixels // h), h) if w >= h else (w, max(1, max_pixels // w))
    return w, h


def open_within_budget(data: bytes, name: str, max_pixels: int | None, too_large: str = "downscale") -> BudgetedImage:
    """Decode image file bytes to RGB within ``max_pixels`` (None: no budget), as the module docstring says.

    Raises TooLargeError (naming ``name``, the size and the budget) for an image that is skipped or beyond
    Pillow's decompression-bomb limit, and ImageReadError for anything unreadable.
    """
    if too_large not in TOO_LARGE_POLICIES:
        raise ValueError(f"too_large must be one of {TOO_LARGE_POLICIES}, got {too_large!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our budget speaks instead
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                pixels = header.width * header.height
                size = f"{header.width}x{header.height}"
        except Image.DecompressionBombError as err:
            raise TooLargeError(f"{name!r} is too large to decode safely: {err}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            pixels, size = 0, ""  # not readable: open_rgb says why
        over = max_pixels is not None and pixels > max_pixels
        if over and too_large == "skip":
            raise TooLargeError(
                f"{name!r}: {size} = {pixels:,} pixels is over the budget of {max_pixels:,} (--max-pixels)"
            )
        image = open_rgb(io.BytesIO(data), name=name)
    budgeted = BudgetedImage(image, image.width, image.height)
    if max_pixels is not None and image.width * image.height > max_pixels:
        target = fit_to_budget(image.width, image.height, max_pixels)
        budgeted.image = image.resize(target, Image.Resampling.LANCZOS)
        budgeted.scale = math.sqrt(max_pixels / (image.width * image.height))
    return budgeted
