"""Reading and writing pixels: image discovery and decoding, augmentation, training streams."""

from __future__ import annotations

from .images import (
    IMAGE_EXTENSIONS,
    CropPolicy,
    ImageReadError,
    find_images,
    load_sample,
    open_rgb,
    to_tensor,
    to_uint8,
)
from .stream import ImageStream, StepBatches

__all__ = [
    "IMAGE_EXTENSIONS",
    "CropPolicy",
    "ImageReadError",
    "ImageStream",
    "StepBatches",
    "find_images",
    "load_sample",
    "open_rgb",
    "to_tensor",
    "to_uint8",
]
