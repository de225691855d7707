"""Writing pixel tensors to video files with PyAV: ``write_video`` and ``write_side_by_side``.

Containers follow the extension (mp4/m4v/mov/mkv: H.264 yuv420p; webm: VP9, or VP8 with ``codec="libvpx"``;
gif: a palette fitted to each frame). Files appear atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .._atomic import atomic_target
from .images import to_uint8

# container format and default codec for each extension write_video understands
_WRITE_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
    ".gif": ("gif", "gif"),
}
# constant-quality setting used when write_video is given crf=None: visually near-lossless for each codec
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 8}
# --- writing -----------------------------------------------------------------------------------------------


def _video_tensor(frames: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Check either accepted layout; returns the tensor and its (T, H, W)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.dtype == torch.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
        return frames, tuple(frames.shape[:3])
    if frames.is_floating_point():
        if frames.ndim != 4 or frames.shape[0] != 3:
            raise ValueError(f"float frames must be [3, T, H, W] in [-1, 1], got shape {tuple(frames.shape)}")
        return frames, tuple(frames.shape[1:])
    raise ValueError(f"frames must be float [3, T, H, W] in [-1, 1] or uint8 [T, H, W, 3], got {frames.dtype}")


def _frames_uint8(frames: torch.Tensor) -> Iterator[np.ndarray]:
    """A checked video tensor -> uint8 ``[H, W, 3]`` per frame (float values outside ``[-1, 1]`` are clipped)."""
    if frames.dtype == torch.uint8:
        for frame in frames:
            yield frame.cpu().numpy()
    else:
        for t in range(frames.shape[1]):
            yield to_uint8(frames[:, t])


def _palette_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An 8-bit palette frame with a palette fitted to this frame (far better than FFmpeg's fixed rgb8 palette)."""
    quantized = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours = np.asarray(quantized.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    # ARGB, every entry opaque: FFmpeg's GIF encoder would treat an unused transparent entry as the frame's
    # transparent colour, and the decoded frame would show holes
    palette = np.full((256, 4), 255, np.uint8)
    palette[: len(colours), 1:] = colours
    palette[len(colours) :, 1:] = colours[0]
    return av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    fps: float,
    *,
    codec: str | None = None,
    crf: int | None = None,
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (fp32 ``[3, T, H, W]`` in ``[-1, 1]``, or uint8 ``[T, H, W, 3]``) to ``path``; returns it.

    ``frames`` may also be an iterable of such chunks of one frame size (e.g. a long video decoded window by
    window): each is encoded as it comes, so memory holds one chunk, not the video.

    The container comes from the extension: .mp4/.m4v/.mov/.mkv (H.264, ``libx264``), .webm (VP9,
    ``libvpx-vp9``; ``codec="libvpx"`` for VP8) or .gif (a palette fitted per frame, no dithering). ``crf`` is the
    codec's constant-quality setting (lower is better; default near-lossless: 18 for x264, 24 for VP9, 8 for VP8;
    ignored for GIF). ``gop`` sets the keyframe interval (smaller: faster seeking, larger files); ``options`` are
    passed to the encoder as FFmpeg private options.

    Frames are stored as yuv420p (the format every player accepts), whose chroma planes need even sides: an odd
    width or height is padded by repeating the last column or row, so the file is then one pixel wider or taller.
    GIF frames keep their exact size. GIF stores delays in 1/100 s, so rates that do not divide 100 are rounded.

    The file appears atomically: encoding goes to a temporary file in the same folder, then ``os.replace``; on
    failure the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise ValueError(
            f"cannot write {str(path)!r}: unknown video extension {suffix!r} (use one of {sorted(_WRITE_FORMATS)})"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive frame rate, got {fps!r}")
    chunks = iter([frames]) if isinstance(frames, (torch.Tensor, np.ndarray)) else iter(frames)
    first = next(chunks, None)
    if first is None:
        raise ValueError("cannot write an empty video: no frames were given")
    first, (count, height, width) = _video_tensor(first)
    if count < 1 or height < 1 or width < 1:
        raise ValueError(f"cannot write an empty video: {count} frames of {width}x{height}")
    container_format, default_codec = _WRITE_FORMATS[suffix]
    codec = codec or default_codec
    palette = codec == "gif"
    pad_w, pad_h = (0, 0) if palette else (width % 2, height % 2)
    with atomic_target(path) as temporary, av.open(str(temporary), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1_000_000))
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "pal8" if palette else "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        private = {}
        if not palette and (crf is not None or codec in _DEFAULT_CRF):
            private["crf"] = str(crf if crf is not None else _DEFAULT_CRF[codec])
            if codec.startswith("libvpx"):
                private["b:v"] = "0"  # constant quality, no bitrate target
        private.update(options or {})
        stream.options = private
        for number, chunk in enumerate(itertools.chain([first], chunks)):
            chunk, (_, chunk_h, chunk_w) = _video_tensor(chunk)
            if (chunk_h, chunk_w) != (height, width):
                raise ValueError(f"chunk {number} has {chunk_w}x{chunk_h} frames; the video's are {width}x{height}")
            for rgb in _frames_uint8(chunk):
                if pad_w or pad_h:
                    rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                frame = _palette_frame(rgb) if palette else av.VideoFrame.from_ndarray(rgb, format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_side_by_side(
    path: str | Path,
    original: torch.Tensor,
    reconstruction: torch.Tensor,
    fps: float,
    **kwargs,
) -> Path:
    """Write ``original | reconstruction`` (both fp32 ``[3, T, H, W]`` in ``[-1, 1]``) side by side to ``path``.

    The two must have the same number of frames and height; the video is ``[3, T, H, W_orig + W_rec]``. Keyword
    arguments go to ``write_video``.
    """
    if original.ndim != 4 or reconstruction.ndim != 4 or original.shape[0] != 3 or reconstruction.shape[0] != 3:
        raise ValueError(
            f"expected two [3, T, H, W] videos, got {tuple(original.shape)} and {tuple(reconstruction.shape)}"
        )
    if original.shape[1:3] != reconstruction.shape[1:3]:
        raise ValueError(
            "original and reconstruction need the same frame count and height, got "
            f"{tuple(original.shape)} and {tuple(reconstruction.shape)}"
        )
    both = torch.cat([original.detach().float().cpu(), reconstruction.detach().float().cpu()], dim=3)
    return write_video(path, both, fps, **kwargs)
