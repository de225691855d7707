"""Opening video files and reading their headers: which stream, its frame rate, length, size and codec.

``open_stream`` is the one place a video container is opened (``tokenizer.data.video`` decodes from it);
``probe_video`` reads a file's ``VideoInfo`` without decoding a frame. Every file problem (missing, empty, not a
video, no video stream, an index pointing past the end of the file) raises ``VideoReadError``, a ``ValueError``
whose message names the file and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .byte_range import FileRange

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".gif"})

VideoSource = str | Path | FileRange  # a video file, or a video member of a tar shard read in place


class VideoReadError(ValueError):
    """A video file that cannot give the requested pixels; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a file's video stream (no frame is decoded to find it)."""

    frames: int | None  # frame count: the header's, else round(duration * fps); None when neither is known
    fps: float  # average frame rate (frames per second)
    duration: float | None  # seconds of video, None when the container does not say
    width: int
    height: int
    codec: str  # FFmpeg decoder name: "h264", "vp9", "gif", ...


@contextmanager
def open_stream(path: VideoSource) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` (a file, or a ``FileRange``: a member of a tar shard, read in place) and pick its first real
    video stream (cover art does not count); errors name the file."""
    name = str(path)
    with ExitStack() as stack:  # closes the container, then the tar member's file, whatever goes wrong
        try:
            size = path.size if isinstance(path, FileRange) else os.path.getsize(path)
            if size == 0:
                raise VideoReadError(f"{name!r} is empty (0 bytes)")
            file = stack.enter_context(closing(path.open())) if isinstance(path, FileRange) else None
        except OSError as err:
            raise VideoReadError(f"cannot read {name!r}: {err.strerror or err}") from err
        try:
            container = stack.enter_context(closing(av.open(name if file is None else file, mode="r")))
        except av.error.FFmpegError as err:
            raise VideoReadError(
                f"cannot read video {name!r}: not a recognised or complete video file ({err})"
            ) from err
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoReadError(f"{name!r} has no video stream (streams: {', '.join(kinds)})")
        stream = streams[0]
        _check_index(stream, size, name)
        stream.thread_type = "AUTO"  # frame + slice threads; the order of output frames is unchanged
        yield container, stream


def _check_index(stream: av.video.stream.VideoStream, size: int, name: str) -> None:
    """Refuse a file cut short after its index: a packet the index lists (byte ``pos`` .. ``pos + size``)
    that ends past the file's last byte. Containers that index as they read (mkv, webm) list no such packet."""
    end = max((entry.pos + entry.size for entry in stream.index_entries), default=0)
    if end > size:
        raise VideoReadError(
            f"{name!r} is truncated: its index lists video data up to byte {end} but the file has {size} bytes"
        )


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Fraction | None:
    if stream.duration and stream.time_base:
        return stream.duration * Fraction(stream.time_base)
    if container.duration:
        return Fraction(container.duration, av.time_base)
    return None


def stream_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str) -> VideoInfo:
    rate = frame_rate(stream)
    if rate is None:
        raise VideoReadError(f"{name!r}: the video stream does not declare a frame rate")
    duration = _duration(container, stream)
    frames = stream.frames or (round(duration * rate) if duration else None)
    codec = stream.codec_context.name
    return VideoInfo(
        frames, float(rate), None if duration is None else float(duration), stream.width, stream.height, codec
    )


def probe_video(path: VideoSource) -> VideoInfo:
    """Frame count, rate, duration, size and codec of a video file, from its header (nothing is decoded).

    Raises VideoReadError for a missing or zero-length file, a file that is not a video container, or a container
    without a video stream (an audio-only file).
    """
    with open_stream(path) as (container, stream):
        return stream_info(container, stream, str(path))
