"""Reading and writing pixels: image and video discovery and decoding, augmentation, training streams."""

from __future__ import annotations

from .images import (
    IMAGE_EXTENSIONS,
    CropPolicy,
    ImageReadError,
    load_sample,
    open_rgb,
    to_tensor,
    to_uint8,
)
from .stream import ClipStream, ImageStream, MediaStream, StepBatches, find_media

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClipStream",
    "CropPolicy",
    "ImageReadError",
    "ImageStream",
    "MediaStream",
    "StepBatches",
    "find_media",
    "load_sample",
    "open_rgb",
    "to_tensor",
    "to_uint8",
]
