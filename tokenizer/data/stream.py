"""Deterministic, endless streams of training samples that any process can resume at any step.

Sample ``g`` of a stream over ``n`` files is the file at position ``g mod n`` of epoch ``g div n``'s permutation
(seeded by ``seed`` and the epoch), augmented with a generator seeded by ``seed`` and ``g``. Step ``s`` of a run
with ``W`` processes, ``A`` accumulation micro-steps and per-process batch ``B`` takes samples
``((s * A + m) * W + r) * B + i``: micro-step ``m``, rank ``r``, item ``i``. Nothing depends on worker processes
or on hidden RNG state, so a resumed run reads exactly the samples an uninterrupted one would, and the ranks of a
distributed run read disjoint samples.

``ImageStream`` serves images, ``ClipStream`` video clips, and ``MediaStream`` both: its micro-batch
``u = g div B`` is all images or all clips, drawn by a generator seeded by ``seed`` and ``u``, and sample ``g``
is then sample ``g`` of that kind's stream.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .colour import random_chroma
from .images import CropPolicy, ImageReadError, load_sample
from .sources import collect_inputs, media_kind
from .video import ClipSpec, VideoInfo, VideoReadError, probe_video, read_clip

log = logging.getLogger(__name__)


def find_media(sources: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(images, videos)`` among the files ``sources`` name (folders searched recursively, files, globs or
    path lists, as ``collect_inputs`` reads them), each sorted; files of other types are left out (GIFs count
    as images). Raises FileNotFoundError naming a source that matches nothing."""
    files = collect_inputs(sources)
    return [p for p in files if media_kind(p) == "image"], [p for p in files if media_kind(p) == "video"]


def _mix(*parts: int | str) -> int:
    """A 64-bit seed from several parts, the same in every process and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


class _FileStream(Dataset):
    """Sample ``g`` of a list of files, with the unreadable ones replaced; subclasses say how a file is read."""

    noun = "file"
    read_error: type[ValueError] = ValueError

    def __init__(self, paths: Sequence[Path], seed: int) -> None:
        if not paths:
            raise ValueError(f"the training set is empty: no {self.noun}s were found in data.train")
        self.paths = list(paths)
        self.seed = seed
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)
        self._reported: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, g: int) -> torch.Tensor:
        epoch, position = divmod(int(g), len(self.paths))
        order = self._permutation(epoch)
        for offset in range(len(self.paths)):
            path = self.paths[int(order[(position + offset) % len(self.paths)])]
            try:
                return self._read(path, int(g))
            except self.read_error as err:
                if path not in self._reported:
                    self._reported.add(path)
                    log.warning("skipping unreadable training %s: %s", self.noun, err)
        first = self.paths[int(order[position])]
        raise self.read_error(f"no training {self.noun} could be read (first tried: {first})")

    def _read(self, path: Path, g: int) -> torch.Tensor:
        raise NotImplementedError

    def _order_seed(self, epoch: int) -> int:
        return self.seed * 1_000_003 + epoch

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self._order_seed(epoch))
            self._order = torch.randperm(len(self.paths), generator=generator)
            self._epoch = epoch
        return self._order


class ImageStream(_FileStream):
    """Sample ``g`` (an int >= 0) -> fp32 ``[3, size, size]`` in ``[-1, 1]``.

    An unreadable image is logged once and replaced by the next readable one of the same epoch, so one
    bad file never ends a run; if no image is readable the error names the first file tried.
    """

    noun = "image"
    read_error = ImageReadError

    def __init__(self, paths: Sequence[Path], policy: CropPolicy, seed: int) -> None:
        super().__init__(paths, seed)
        self.policy = policy

    def _read(self, path: Path, g: int) -> torch.Tensor:
        return load_sample(path, self.policy, seed=self.seed * (1 << 40) + g)


class ClipStream(_FileStream):
    """Sample ``g`` (an int >= 0) -> a video clip, fp32 ``[3, clip.frames, size, size]`` in ``[-1, 1]``.

    The clip takes ``clip.frames`` frames, every ``clip.stride``-th, from a first frame drawn uniformly among those
    that leave room for the whole clip (the frame count comes from the file's header, probed once per file; when
    the header gives none, the clip starts at the first frame). As for images (``CropPolicy``), the shorter side
    is resized to ``size * U(1, max_zoom)``, a ``size`` square is cropped (random or centred; the same for every
    frame), the clip is mirrored with probability one half and its hues turned with probability ``chroma_jitter``;
    everything is drawn from ``(seed, g)``. A video that cannot be read or is too short for one clip is logged
    once and replaced by the next readable one of the same epoch; if none is readable the error names a file.
    """

    noun = "video"
    read_error = VideoReadError

    def __init__(self, paths: Sequence[Path], policy: CropPolicy, seed: int, clip: ClipSpec) -> None:
        super().__init__(paths, seed)
        if clip.fps is not None:
            raise ValueError("ClipStream samples frames by stride: a ClipSpec with fps is not supported")
        self.policy = policy
        self.clip = clip
        self._probes: dict[Path, VideoInfo | VideoReadError] = {}

    def _order_seed(self, epoch: int) -> int:
        return _mix("video order", self.seed, epoch)

    def _probe(self, path: Path) -> VideoInfo:
        if path not in self._probes:
            try:
                self._probes[path] = probe_video(path)
            except VideoReadError as err:
                self._probes[path] = err
        found = self._probes[path]
        if isinstance(found, VideoReadError):
            raise found
        return found

    def _read(self, path: Path, g: int) -> torch.Tensor:
        info, clip, policy = self._probe(path), self.clip, self.policy
        span = (clip.frames - 1) * clip.stride + 1  # source frames one clip covers
        if info.frames is not None and info.frames < span:
            raise VideoReadError(
                f"{str(path)!r} has {info.frames} frames, fewer than one clip needs "
                f"({clip.frames} frames at stride {clip.stride} span {span})"
            )
        rng = random.Random(_mix("clip", self.seed, g))
        first = rng.randint(0, info.frames - span) if info.frames is not None else 0
        zoom = rng.uniform(1.0, policy.max_zoom) if policy.max_zoom > 1.0 else 1.0
        crop_seed = rng.getrandbits(63)
        flip = policy.flip and rng.random() < 0.5
        # half a frame early: the clip starts at the first frame at or after `start`, whatever rounding the
        # container's timestamps carry
        start = max(0.0, (first - 0.5) / info.fps)
        pixels = read_clip(
            path,
            ClipSpec(frames=clip.frames, stride=clip.stride, start=start),
            size=policy.size,
            resize=round(policy.size * zoom),
            crop="random" if policy.random_crop else "center",
            seed=crop_seed,
        )
        pixels = pixels.flip(-1) if flip else pixels
        return random_chroma(pixels, rng, policy.chroma_jitter)  # one turn of hue for the whole clip


class MediaStream(Dataset):
    """Sample ``g`` -> an image, fp32 ``[3, size, size]``, or a clip, fp32 ``[3, clip.frames, size, size]``, in
    ``[-1, 1]``; the ``batch_size`` samples of one micro-batch are all of one kind.

    Micro-batch ``u = g div batch_size`` is made of images with probability ``image_fraction`` (None: the share
    of images among the files), drawn by a generator seeded by ``(seed, u)``; with files of one kind only, every
    micro-batch is of that kind. Sample ``g`` is then ``ImageStream(images, policy, seed)[g]`` or
    ``ClipStream(videos, policy, seed, clip)[g]``, so it depends on ``(seed, g)`` alone.
    """

    def __init__(
        self,
        images: Sequence[Path],
        videos: Sequence[Path],
        policy: CropPolicy,
        seed: int,
        batch_size: int,
        clip: ClipSpec,
        image_fraction: float | None = None,
    ) -> None:
        if not images and not videos:
            raise ValueError("the training set is empty: no images or videos were found in data.train")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if image_fraction is not None and not 0.0 <= image_fraction <= 1.0:
            raise ValueError(f"image_fraction must lie in [0, 1] or be None, got {image_fraction}")
        self.images = ImageStream(images, policy, seed) if images else None
        self.videos = ClipStream(videos, policy, seed, clip) if videos else None
        self.seed = seed
        self.batch_size = batch_size
        self.image_fraction = len(images) / (len(images) + len(videos)) if image_fraction is None else image_fraction

    def __len__(self) -> int:
        return sum(len(s) for s in (self.images, self.videos) if s is not None)

    def kind(self, micro_batch: int) -> str:
        """``"image"`` or ``"video"``: what micro-batch ``micro_batch`` (samples ``u * B .. u * B + B - 1``) holds."""
        if self.videos is None:
            return "image"
        if self.images is None:
            return "video"
        draw = random.Random(_mix("kind", self.seed, int(micro_batch))).random()
        return "image" if draw < self.image_fraction else "video"

    def __getitem__(self, g: int) -> torch.Tensor:
        stream = self.images if self.kind(int(g) // self.batch_size) == "image" else self.videos
        return stream[g]


class StepBatches:
    """Batch sampler: the sample numbers of each micro-batch of this rank, from ``start_step`` on, forever."""

    def __init__(self, start_step: int, batch_size: int, accumulation: int, world_size: int, rank: int) -> None:
        self.start_step = start_step
        self.batch_size = batch_size
        self.accumulation = accumulation
        self.world_size = world_size
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.start_step * self.accumulation
        while True:
            first = (micro * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            micro += 1
