"""Reading clips from video files into model-ready tensors (writing: ``tokenizer.data.video_write``).

Pixels leave this module as fp32 ``[3, T, H, W]`` (or ``[3, H, W]`` per frame) in ``[-1, 1]``, the layout and
range of the Tokenizer. Decoding goes through PyAV (FFmpeg): mp4, mov, mkv, webm (VP8/VP9) and animated GIF.

Reading seeks: a clip that starts at ``t`` seconds seeks to the keyframe at or before ``t``, decodes forward,
discards the frames before ``t`` and stops as soon as the clip is complete, so reading a short clip near the end
of a long video costs about one group of pictures, not the whole file. Times are measured from the video stream's
first timestamp, so ``start=0`` is always the first frame.

Every function that takes a ``path`` also takes a ``FileRange`` (``byte_range``): a video member of a tar
shard, read in place; messages then name it ``shard.tar#key.mp4``.

Every file problem (missing, empty, not a video, no video stream, truncated or corrupt data, a clip that runs
past the end) raises ``VideoReadError``, a ``ValueError`` whose message names the file and the reason. Opening
and probing live in ``tokenizer.data.video_probe``: a file cut short after its index (an mp4 written with the
index first, "faststart") is caught there, when opened: the index points past the end of the file.

A stream whose resolution changes part-way (a new sequence header) is rescaled, not refused: every frame is
brought to the video's size (the one the container declares, which ``probe_video`` reports and which is the
first frame's), bicubic, before any ``resize``/``size``/``crop``; pass a ``ReadStats`` to count such frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice

import av
import torch
from PIL import Image

from . import video_probe
from .images import to_tensor
from .preprocess import ImagePreprocess
from .video_probe import VideoInfo, VideoReadError, VideoSource, probe_video

VIDEO_EXTENSIONS = video_probe.VIDEO_EXTENSIONS  # also here: the file types this module reads

# codecs whose frames depend on earlier frames without keyframe marking that a seek can trust: decode from the start
_NO_SEEK_CODECS = frozenset({"gif", "apng", "webp"})


@dataclass
class ReadStats:
    """What a read did beyond decoding: pass one to ``read_clip``, ``iter_frames`` or ``iter_windows`` and
    read it once the read is done."""

    resized_frames: int = 0  # frames of another size than the video's, rescaled to it (a mid-stream change)


@dataclass(frozen=True)
class ClipSpec:
    """Which frames make a clip: ``frames`` frames from ``start`` seconds on, every ``stride``-th, or at ``fps``.

    With ``fps`` set, the clip is resampled in time: target timestamps are ``start + k / fps`` and each takes the
    nearest source frame (an exact half-way tie takes the later one), so frames are dropped or repeated as the
    rates require. ``fps`` and ``stride > 1`` are mutually exclusive.
    """

    frames: int = 17  # clip length; 17 = 1 + 16 suits a causal tokenizer with 4x temporal downsampling
    stride: int = 1  # take every stride-th decoded frame
    fps: float | None = None  # target frame rate; None keeps the source timing (with stride)
    start: float = 0.0  # seconds from the first frame

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ValueError(f"frames must be a positive integer, got {self.frames!r}")
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {self.stride!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive frame rate or None, got {self.fps!r}")
        if self.fps is not None and self.stride > 1:
            raise ValueError(f"fps={self.fps} and stride={self.stride} are mutually exclusive: set one of them")
        if not (math.isfinite(self.start) and self.start >= 0):
            raise ValueError(f"start must be a non-negative number of seconds, got {self.start!r}")


# --- decoding ----------------------------------------------------------------------------------------------


def _decoded(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, name: str
) -> Iterator[av.VideoFrame]:
    """Frames of ``stream`` in presentation order from the container's current position, decoded one at a time.

    The single place that decodes: tests wrap it to count decoded frames.
    """
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.error.FFmpegError as err:
        raise VideoReadError(f"{name!r} is corrupt or truncated: decoding failed ({err})") from err


@dataclass
class _Timeline:
    """Timing of an opened stream, exact: frame times as Fractions of a second from the first frame."""

    origin: int  # pts of the first frame
    time_base: Fraction
    frame_duration: Fraction  # seconds, from the declared rate
    size: tuple[int, int] | None  # (width, height) every frame is brought to; None: the first frame's

    def time(self, frame: av.VideoFrame, previous: Fraction | None) -> Fraction:
        if frame.pts is None:  # some raw streams carry no timestamps: assume a constant rate
            return Fraction(0) if previous is None else previous + self.frame_duration
        return (frame.pts - self.origin) * self.time_base


def _timed_frames(path: VideoSource, start: Fraction) -> Iterator[tuple[Fraction, av.VideoFrame, _Timeline]]:
    """Decoded frames with their times (seconds from the first frame), from the last frame before ``start`` on.

    Seeks to the keyframe at or before ``start`` when ``start > 0``; the frames before ``start`` are decoded (a
    decoder needs them) and dropped here, except the last one, which the nearest-frame resampling may pick.
    Close the generator (``contextlib.closing``) to stop decoding early and close the file.
    """
    name = str(path)
    with video_probe.open_stream(path) as (container, stream):
        info = video_probe.stream_info(container, stream, name)
        rate = video_probe.frame_rate(stream)
        origin = stream.start_time if stream.start_time is not None else 0
        size = (info.width, info.height) if info.width and info.height else None
        timeline = _Timeline(origin, Fraction(stream.time_base), 1 / rate, size)
        if info.duration is not None and start >= Fraction(info.duration) and start > 0:
            raise VideoReadError(
                f"{name!r}: a clip starting at {float(start):g} s is out of range: the video is "
                f"{info.duration:g} s long ({_frame_count(info)})"
            )
        frames = _decoded(container, stream, name)
        if start > 0 and info.codec not in _NO_SEEK_CODECS:
            # backward: the keyframe at or before the target, from which decoding reproduces every later frame
            container.seek(origin + math.floor(start / timeline.time_base), stream=stream, backward=True)
            frames = _decoded(container, stream, name)
            first = next(frames, None)
            if first is None or timeline.time(first, None) > start:
                # the index put us past the target (or nowhere): rewind to the first frame instead
                frames.close()
                container.seek(origin, stream=stream, backward=True)
                frames = _decoded(container, stream, name)
            else:
                frames = _chain(first, frames)
        previous: tuple[Fraction, av.VideoFrame] | None = None
        t: Fraction | None = None
        with closing(frames):
            for frame in frames:
                t = timeline.time(frame, t)
                if t < start:
                    previous = (t, frame)
                    continue
                if previous is not None:
                    yield (*previous, timeline)
                    previous = None
                yield t, frame, timeline
        if previous is not None:  # every decoded frame lies before start (start within the last frame)
            yield (*previous, timeline)


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    with closing(rest):
        yield first
        yield from rest


def _frame_count(info: VideoInfo) -> str:
    return f"{info.frames} frames" if info.frames is not None else "unknown frame count"


def _conformed(frame: av.VideoFrame, timeline: _Timeline, stats: ReadStats | None) -> av.VideoFrame:
    """``frame`` at the video's size: a frame of another size (the stream changed resolution) is rescaled,
    bicubic, to RGB (RGBA when it has alpha), and counted in ``stats``."""
    if timeline.size is None:
        timeline.size = (frame.width, frame.height)
    if (frame.width, frame.height) == timeline.size:
        return frame
    if stats is not None:
        stats.resized_frames += 1
    alpha = any(component.is_alpha for component in frame.format.components)
    width, height = timeline.size
    return frame.reformat(width, height, "rgba" if alpha else "rgb24", interpolation="BICUBIC")


def _to_pixels(frame: av.VideoFrame, preprocess: ImagePreprocess | None, seed: int) -> torch.Tensor:
    """Decoded frame -> fp32 ``[3, H, W]`` in ``[-1, 1]``; transparency is composited on white, as for images."""
    if any(component.is_alpha for component in frame.format.components):
        rgba = Image.fromarray(frame.to_ndarray(format="rgba"), "RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    elif preprocess is None:
        return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    else:
        image = frame.to_image()
    if preprocess is not None:
        image = preprocess.apply(image, seed)
    return to_tensor(image)


def _preprocess(resize: int | None, size: int | None, crop: str) -> ImagePreprocess | None:
    """ImagePreprocess's spatial semantics with factor 1: without ``size`` the frame keeps its (resized) shape."""
    if resize is None and size is None and crop == "center":
        return None
    return ImagePreprocess(resize=resize, size=size, crop=crop, factor=1)


def _seconds(value: float) -> Fraction:
    # floats such as 0.1 are not exact: take the nearest simple fraction so 0.1 s meets a frame stamped 1/10 s
    return Fraction(value).limit_denominator(1_000_000)


def iter_frames(
    path: VideoSource,
    *,
    start: float = 0.0,
    stride: int = 1,
    resize: int | None = None,
    size: int | None = None,
    crop: str = "center",
    seed: int = 0,
    stats: ReadStats | None = None,
) -> Iterator[torch.Tensor]:
    """Frames of ``path`` one at a time as fp32 ``[3, H, W]`` in ``[-1, 1]``: every ``stride``-th from ``start`` s.

    The first frame is the first at or after ``start`` (seconds from the first frame). Memory stays bounded (one
    frame, plus the decoder's reference frames) whatever the video's length; the file is closed when the iterator
    is exhausted or closed. ``resize``, ``size``, ``crop``, ``seed`` and ``stats`` work as in ``read_clip``;
    arguments are checked at the call, the file is opened at the first ``next``.
    """
    ClipSpec(frames=1, stride=stride, start=start)  # validates stride and start, naming the field
    return _iter_frames(path, _seconds(start), stride, _preprocess(resize, size, crop), seed, stats)


def _iter_frames(
    path: VideoSource,
    begin: Fraction,
    stride: int,
    preprocess: ImagePreprocess | None,
    seed: int,
    stats: ReadStats | None,
) -> Iterator[torch.Tensor]:
    with closing(_timed_frames(path, begin)) as frames:
        index = 0
        for t, frame, timeline in frames:
            if t < begin:
                continue
            if index % stride == 0:
                yield _to_pixels(_conformed(frame, timeline, stats), preprocess, seed)
            index += 1


def iter_windows(path: VideoSource, first: int, window: int, **kwargs) -> Iterator[torch.Tensor]:
    """Consecutive chunks of ``iter_frames(path, **kwargs)`` as fp32 ``[3, T, H, W]`` in ``[-1, 1]``.

    The first chunk has ``first`` frames, every later one ``window`` frames; the last may be shorter (the caller
    decides whether to pad, drop or encode it). For a causal tokenizer: ``first=1 + k * window`` or ``first=1``.
    Only one chunk is held at a time.
    """
    for field, value in (("first", first), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a positive number of frames, got {value!r}")
    return _iter_windows(iter_frames(path, **kwargs), first, window)


def _iter_windows(frames: Iterator[torch.Tensor], first: int, window: int) -> Iterator[torch.Tensor]:
    chunk: list[torch.Tensor] = []
    wanted = first
    with closing(frames):
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == wanted:
                yield torch.stack(chunk, dim=1)
                chunk, wanted = [], window
    if chunk:
        yield torch.stack(chunk, dim=1)


def read_clip(
    path: VideoSource,
    spec: ClipSpec = ClipSpec(),
    *,
    size: int | None = None,
    resize: int | None = None,
    crop: str = "center",
    seed: int = 0,
    pad: str = "error",
    stats: ReadStats | None = None,
) -> torch.Tensor:
    """One clip of ``path`` as fp32 ``[3, spec.frames, H, W]`` in ``[-1, 1]``.

    Frames are chosen by ``spec`` (start, stride or resampling fps); the file is read by seeking to the keyframe
    before the start and decoding only until the clip is complete.

    Spatially, as ``ImagePreprocess``: ``resize`` scales the shorter side to that many pixels (bicubic,
    antialiased); ``size`` crops a ``size`` x ``size`` square (scaling the shorter side up to ``size`` first if it
    is smaller), centred (``crop="center"``) or at a random offset (``crop="random"``) drawn from ``seed``; the
    same crop applies to every frame of the clip. With neither, frames keep their size.

    When the video ends before the clip is complete, ``pad="error"`` (default) raises VideoReadError saying how
    many frames were available; ``pad="repeat_last"`` repeats the last available frame instead (a clip with no
    frame at all is still an error).

    Frames of another size than the video's (a mid-stream resolution change) are rescaled to it first; pass
    ``stats`` (a ``ReadStats``) to learn how many.
    """
    if pad not in ("error", "repeat_last"):
        raise ValueError(f"pad must be 'error' or 'repeat_last', got {pad!r}")
    preprocess = _preprocess(resize, size, crop)
    if spec.fps is None:
        with closing(
            iter_frames(
                path, start=spec.start, stride=spec.stride, resize=resize, size=size, crop=crop, seed=seed, stats=stats
            )
        ) as it:
            picked = list(islice(it, spec.frames))
    else:
        picked = _resampled(path, spec, preprocess, seed, stats)
    if len(picked) < spec.frames:
        if not picked or pad == "error":
            raise VideoReadError(_short_message(path, spec, len(picked)))
        picked += [picked[-1]] * (spec.frames - len(picked))
    return torch.stack(picked, dim=1)


def _resampled(
    path: VideoSource, spec: ClipSpec, preprocess: ImagePreprocess | None, seed: int, stats: ReadStats | None
) -> list[torch.Tensor]:
    """Nearest source frame for each target time ``start + k / fps`` (ties take the later frame)."""
    start, step = _seconds(spec.start), 1 / Fraction(spec.fps).limit_denominator(1_000_000)
    targets = [start + k * step for k in range(spec.frames)]
    picked: list[torch.Tensor] = []
    previous: tuple[Fraction, av.VideoFrame, torch.Tensor | None] | None = None
    timeline: _Timeline | None = None

    def pixels_of(entry: tuple[Fraction, av.VideoFrame, torch.Tensor | None]) -> torch.Tensor:
        if entry[2] is not None:
            return entry[2]
        return _to_pixels(_conformed(entry[1], timeline, stats), preprocess, seed)

    with closing(_timed_frames(path, start)) as frames:
        for t, frame, timeline in frames:
            current: tuple[Fraction, av.VideoFrame, torch.Tensor | None] = (t, frame, None)
            while len(picked) < len(targets) and t >= targets[len(picked)]:
                target = targets[len(picked)]
                if previous is not None and target - previous[0] < t - target:
                    previous = (previous[0], previous[1], pixels_of(previous))
                    picked.append(previous[2])
                else:
                    current = (t, frame, pixels_of(current))
                    picked.append(current[2])
            if len(picked) == len(targets):
                break
            previous = current
    if previous is not None and timeline is not None:
        # past the last frame: targets still inside its display time take it; later ones are out of range
        end = previous[0] + timeline.frame_duration
        while len(picked) < len(targets) and targets[len(picked)] < end:
            previous = (previous[0], previous[1], pixels_of(previous))
            picked.append(previous[2])
    return picked


def _short_message(path: VideoSource, spec: ClipSpec, available: int) -> str:
    name = str(path)
    try:
        info = probe_video(path)
        about = f"the video has {_frame_count(info)}" + (f", {info.duration:g} s" if info.duration else "")
    except VideoReadError:
        about = "the video's length is unknown"
    sampling = f"at {spec.fps:g} fps" if spec.fps is not None else f"with stride {spec.stride}"
    return (
        f"{name!r}: the video ends before the clip is complete: only {available} of {spec.frames} frames available "
        f"from {spec.start:g} s {sampling} ({about}; a truncated file also ends early); "
        "pass pad='repeat_last' to repeat the last frame"
    )
