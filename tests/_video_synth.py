"""Test clips: the package's synthetic patterns plus ``"counter"``, a clip that says which frame is which.

``tokenizer.data.video_synth`` makes the ``"shapes"`` and ``"pan"`` clips the training recipe and the demo use;
this module adds the pattern only tests need. In a ``"counter"`` clip frame ``i`` shows ``i`` in binary as a
2 x 5 grid of dark / light cells (bit 0 top left, row-major), which survives lossy coding, so ``read_counter``
tells which source frame a decoded frame is (up to frame 1023): seeking, strides and frame rates are checked
against numbers, not against pixels.

``synthetic_frames`` and ``make_test_clip`` take every pattern, with the package's signatures; ``write_segments``
writes a stream whose resolution changes part-way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from tokenizer._atomic import atomic_target
from tokenizer.data import video_synth
from tokenizer.data.video_write import write_video

PATTERNS = (*video_synth.PATTERNS, "counter")
_COUNTER_ROWS, _COUNTER_COLS = 2, 5  # 10 bits: frames 0..1023
_DARK, _LIGHT = 30, 225


def synthetic_frames(
    frames: int, width: int, height: int, pattern: str = "shapes", image: Image.Image | None = None
) -> np.ndarray:
    """The pixels ``make_test_clip`` encodes: uint8 ``[frames, height, width, 3]``, the same on every call."""
    if pattern != "counter":
        return video_synth.synthetic_frames(frames, width, height, pattern, image)
    if not 1 <= frames <= 2 ** (_COUNTER_ROWS * _COUNTER_COLS):
        raise ValueError(f"frames={frames}: the counter pattern numbers 1 to 1024 frames")
    return np.stack([_counter(i, width, height) for i in range(frames)])


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
    """``tokenizer.data.video_synth.make_test_clip`` for every pattern of ``PATTERNS``. Returns the path."""
    return write_video(path, synthetic_frames(frames, width, height, pattern, image), fps, **write_kwargs)


def _cells(width: int, height: int) -> list[tuple[slice, slice]]:
    """(rows, cols) of each counter cell, bit 0 first (row-major)."""
    ys = np.linspace(0, height, _COUNTER_ROWS + 1).round().astype(int)
    xs = np.linspace(0, width, _COUNTER_COLS + 1).round().astype(int)
    return [
        (slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1])) for r in range(_COUNTER_ROWS) for c in range(_COUNTER_COLS)
    ]


def _counter(index: int, width: int, height: int) -> np.ndarray:
    rgb = np.empty((height, width, 3), np.uint8)
    for bit, (rows, cols) in enumerate(_cells(width, height)):
        rgb[rows, cols] = _LIGHT if index >> bit & 1 else _DARK
    return rgb


def read_counter(frame: torch.Tensor) -> int:
    """The frame number shown by a ``"counter"`` frame (fp32 ``[3, H, W]`` in ``[-1, 1]``, at the encoded size).

    Each cell is judged by the mean of its central half, so blurred edges from lossy coding do not matter.
    """
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"expected one [3, H, W] frame, got shape {tuple(frame.shape)}")
    gray = frame.float().mean(0)
    value = 0
    for bit, (rows, cols) in enumerate(_cells(gray.shape[1], gray.shape[0])):
        cell = gray[rows, cols]
        h, w = cell.shape
        centre = cell[h // 4 : h - h // 4 or None, w // 4 : w - w // 4 or None]
        if centre.mean() > 0:  # halfway between dark and light
            value |= 1 << bit
    return value


def write_segments(
    path: str | Path,
    segments: Sequence[np.ndarray],
    fps: float = 10.0,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Encode ``segments`` (uint8 ``[T, H, W, 3]`` each, even sides; sizes may differ) one after the other into
    one MPEG-4 Part 2 video stream of an .mp4/.mov/.mkv at ``path``, and return the path.

    Each segment has its own encoder, so it starts with a keyframe whose in-band header carries its size: with
    two sizes this is a stream that changes resolution part-way, as a camera switching modes or a splice makes
    (H.264 in mp4 could not: its one header lives in the index). ``container_options`` go to the muxer, e.g.
    ``{"movflags": "+faststart"}`` puts an mp4's index before its data. Written atomically.
    """
    formats = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ValueError(f"cannot write {str(path)!r}: write_segments writes {sorted(formats)}, not {suffix!r}")
    if not segments:
        raise ValueError("cannot write an empty video: no segments were given")
    rate = Fraction(fps).limit_denominator(1_000_000)
    options = dict(container_options or {})
    with atomic_target(path) as temporary, av.open(str(temporary), "w", formats[suffix], options=options) as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = segments[0].shape[1:3]
        stream.pix_fmt = "yuv420p"
        pts = 0
        for number, pixels in enumerate(segments):
            encoder = stream.codec_context
            if number:  # a fresh encoder: its first packet is a keyframe with the new size in its header
                encoder = av.CodecContext.create("mpeg4", "w")
                encoder.height, encoder.width = pixels.shape[1:3]
                encoder.pix_fmt, encoder.framerate = "yuv420p", rate
            encoder.time_base = 1 / rate
            for rgb in [*pixels, None]:
                frame = None
                if rgb is not None:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    frame.pts, frame.time_base, pts = pts, encoder.time_base, pts + 1
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
    return Path(path)
