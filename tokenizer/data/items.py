"""One input file, read for tokenization: pixels and manifest fields, or the reason it cannot be tokenized.

Images become ``[3, H, W]`` through ``ImagePreprocess``. Videos (for a video tokenizer) become either one clip
``[3, T, H, W]`` (``VideoSampling.clip_frames`` set) or, for whole videos, a note that the caller should
stream the file in windows (``stream_video=True``): a long video is never held in memory at once.
Reasons are recorded with a kind: ``unreadable``, ``unsupported``, ``too_small``, ``not_a_file`` (a folder,
FIFO, device or symlink loop: never opened), ``too_large_file`` (over the byte limit: never read) or
``too_large`` (an image over the pixel budget with ``too_large="skip"``; see ``pixel_budget``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .byte_range import open_binary
from .containers import ContainedItem, MemberError
from .files import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_VIDEO_BYTES, InputFileError, check_input_file
from .images import ImageReadError
from .pixel_budget import TooLargeError
from .preprocess import ImagePreprocess, LoadedImage, TooSmallError, decode_for_tokenization, load_for_tokenization
from .sources import media_kind
from .video import ClipSpec, ReadStats, VideoReadError, VideoSource, probe_video, read_clip


@dataclass(frozen=True)
class VideoSampling:
    """Which frames of a video are tokenized."""

    clip_frames: int | None = None  # one clip of this many frames (1 + k * temporal factor); None: whole video
    stride: int = 1  # take every stride-th frame
    fps: float | None = None  # or resample to this frame rate (nearest frame); excludes stride > 1
    start: float = 0.0  # seconds
    window: int = 32  # whole videos: frames per window after the first (rounded down to the temporal factor)

    def __post_init__(self) -> None:
        if self.clip_frames is not None and self.clip_frames < 1:
            raise ValueError(f"clip_frames must be at least 1, got {self.clip_frames}")
        if self.stride < 1 or self.window < 1:
            raise ValueError(f"stride and window must be at least 1, got {self.stride} and {self.window}")
        if self.fps is not None and (self.fps <= 0 or self.stride > 1):
            raise ValueError("fps must be positive and cannot be combined with stride > 1")
        if self.start < 0:
            raise ValueError(f"start must be >= 0 seconds, got {self.start}")

    def effective_fps(self, source_fps: float) -> float:
        return self.fps if self.fps is not None else source_fps / self.stride


@dataclass
class InputItem:
    position: int  # in the chunk
    source: str
    pixels: torch.Tensor | None = None  # [3, H, W] or [3, T, H, W]; None for errors and streamed videos
    stream_video: bool = False  # a whole video: the caller reads it in windows, from ``video``
    video: VideoSource | None = None  # the video to stream: its file, or its place in a tar shard
    record: dict[str, Any] = field(default_factory=dict)  # manifest fields, or {"kind", "error"} for errors
    file_stat: tuple[int, int] | None = None  # (size, mtime_ns) before reading; None if it could not be stat'ed


def file_sha256(path: VideoSource, block: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, or of a ``FileRange`` of one (a member of a tar shard)."""
    digest = hashlib.sha256()
    with open_binary(path) as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def crop_to_factor(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """Centre-crop the last two axes down to multiples of ``factor``."""
    height, width = pixels.shape[-2:]
    new_h, new_w = height // factor * factor, width // factor * factor
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return pixels[..., top : top + new_h, left : left + new_w]


def input_stat(path: str | Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of ``path`` (symlinks followed), or None when it cannot be stat'ed: what a resumed
    run compares to notice an input changed since its shard was written."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class InputReader(Dataset):
    """Item ``i`` of ``paths`` (files, or items of tar / Parquet files: ``containers``) as an ``InputItem``.
    ``videos=False`` (an image tokenizer) records videos as unsupported, whatever their size. Only regular files
    are opened; ``max_file_bytes`` (None: ``DEFAULT_MAX_IMAGE_BYTES`` for images, ``DEFAULT_MAX_VIDEO_BYTES`` for
    videos) is the largest file (or image inside a container) read."""

    def __init__(
        self,
        paths: list[Path | ContainedItem],
        preprocess: ImagePreprocess,
        sampling: VideoSampling,
        videos: bool,
        max_file_bytes: int | None = None,
    ) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.sampling = sampling
        self.videos = videos
        self.max_image_bytes = max_file_bytes or DEFAULT_MAX_IMAGE_BYTES
        self.max_video_bytes = max_file_bytes or DEFAULT_MAX_VIDEO_BYTES

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> InputItem:
        path = self.paths[i]
        if not isinstance(path, Path):  # a sample of a tar shard or a row of a Parquet file
            return self._read_contained(i, path)
        item = InputItem(i, str(path))
        kind = media_kind(path)
        limit = {"image": self.max_image_bytes, "video": self.max_video_bytes if self.videos else None}.get(kind)
        try:
            info = check_input_file(path, limit)  # before any open: a FIFO or a device is never opened
            item.file_stat = info.st_size, info.st_mtime_ns
            if kind == "image":
                loaded = load_for_tokenization(path, self.preprocess, max_bytes=limit)
                item.pixels, item.record = loaded.pixels, self._image_record(loaded)
            elif kind == "video" and self.videos:
                self._read_video(path, item)
            elif kind == "video":
                item.record = {"kind": "unsupported", "error": f"{path}: a video needs a video tokenizer"}
            else:
                item.record = {
                    "kind": "unsupported",
                    "error": f"{path}: unsupported file type {path.suffix or '(none)'!r}",
                }
        except InputFileError as err:
            item.pixels, item.record = None, {"kind": err.kind, "error": str(err)}
            item.file_stat = item.file_stat or input_stat(path)
        except TooSmallError as err:
            item.pixels, item.record = None, {"kind": "too_small", "error": str(err)}
        except TooLargeError as err:
            item.pixels, item.record = None, {"kind": "too_large", "error": str(err)}
        except (ImageReadError, VideoReadError) as err:
            item.pixels, item.record = None, {"kind": "unreadable", "error": str(err)}
        return item

    def _read_contained(self, i: int, contained: ContainedItem) -> InputItem:
        """Item ``i``: an image inside a container, decoded from its bytes, or a video inside a tar shard, read
        as a loose video file is but from its place in the tar; its record gets the sample's ``meta`` (always,
        ``{}`` when it has none), its ``file_stat`` is the container's."""
        item = InputItem(i, contained.source, file_stat=input_stat(contained.path))
        # an image tokenizer refuses a video as unsupported, whatever its size (a video member is never read here)
        video_limit = self.max_video_bytes if self.videos else sys.maxsize
        try:
            payload = contained.read(self.max_image_bytes, video_limit)
            if payload.video is not None and not self.videos:
                item.record = {"kind": "unsupported", "error": f"{payload.video}: a video needs a video tokenizer"}
                return item
            if payload.video is not None:
                self._read_video(payload.video, item)
            else:
                loaded = decode_for_tokenization(payload.data, contained.source, self.preprocess)
                item.pixels, item.record = loaded.pixels, self._image_record(loaded)
            item.record["meta"] = payload.meta
        except (MemberError, InputFileError) as err:
            item.record = {"kind": err.kind, "error": str(err)}
        except TooSmallError as err:
            item.record = {"kind": "too_small", "error": str(err)}
        except TooLargeError as err:
            item.record = {"kind": "too_large", "error": str(err)}
        except (ImageReadError, VideoReadError) as err:
            item.pixels, item.record = None, {"kind": "unreadable", "error": str(err)}
        return item

    def _image_record(self, loaded: LoadedImage) -> dict[str, Any]:
        """The manifest fields of a decoded image."""
        record = {"kind": "image", "width": loaded.width, "height": loaded.height, "sha256": loaded.sha256}
        if loaded.scale is not None:  # over the pixel budget: downscaled to fit
            record.update(scale=round(loaded.scale, 6), scaled_size=list(loaded.scaled_size))
        if self.preprocess.scales_up(*(loaded.scaled_size or (loaded.width, loaded.height))):
            record["upscaled"] = True  # smaller than --size: enlarged
        return record

    def _read_video(self, path: VideoSource, item: InputItem) -> None:
        info = probe_video(path)
        factor = self.preprocess.factor
        if min(info.width, info.height) < factor and self.preprocess.size is None and self.preprocess.resize is None:
            raise TooSmallError(f"{str(path)!r}: {info.width}x{info.height} pixels is smaller than one token")
        sampling = self.sampling
        item.record = {
            "kind": "video",
            "width": info.width,
            "height": info.height,
            "sha256": file_sha256(path),
            "fps": sampling.effective_fps(info.fps),
            "start": sampling.start,
            "stride": sampling.stride,
        }
        if self.preprocess.scales_up(info.width, info.height):  # frames smaller than --size: enlarged
            item.record["upscaled"] = True
        if sampling.clip_frames is None:
            item.stream_video, item.video = True, path
            return
        spec = ClipSpec(frames=sampling.clip_frames, stride=sampling.stride, fps=sampling.fps, start=sampling.start)
        stats = ReadStats()
        pixels = read_clip(
            path, spec, size=self.preprocess.size, resize=self.preprocess.resize, crop=self.preprocess.crop,
            seed=int(item.record["sha256"][:16], 16), stats=stats,
        )  # fmt: skip
        item.pixels = crop_to_factor(pixels, factor)
        item.record.update(frames=sampling.clip_frames, resized_frames=stats.resized_frames)
