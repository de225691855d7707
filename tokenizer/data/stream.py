"""A deterministic, endless stream of training samples that any process can resume at any step.

Sample ``g`` of the stream is the image at position ``g mod n`` of epoch ``g div n``'s permutation
(seeded by ``seed`` and the epoch), augmented with a generator seeded by ``seed`` and ``g``. Step ``s``
of a run with ``W`` processes, ``A`` accumulation micro-steps and per-process batch ``B`` takes samples
``((s * A + m) * W + r) * B + i``: micro-step ``m``, rank ``r``, item ``i``. Nothing depends on worker
processes or on hidden RNG state, so a resumed run reads exactly the samples an uninterrupted one would,
and the ranks of a distributed run read disjoint samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import CropPolicy, ImageReadError, load_sample

log = logging.getLogger(__name__)


class ImageStream(Dataset):
    """Sample ``g`` (an int >= 0) -> fp32 ``[3, size, size]`` in ``[-1, 1]``.

    An unreadable image is logged once and replaced by the next readable one of the same epoch, so one
    bad file never ends a run; if no image is readable the error names the first file tried.
    """

    def __init__(self, paths: Sequence[Path], policy: CropPolicy, seed: int) -> None:
        if not paths:
            raise ValueError("the training set is empty: no images were found in data.train")
        self.paths = list(paths)
        self.policy = policy
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
                return load_sample(path, self.policy, seed=self.seed * (1 << 40) + int(g))
            except ImageReadError as err:
                if path not in self._reported:
                    self._reported.add(path)
                    log.warning("skipping unreadable training image: %s", err)
        raise ImageReadError(f"no training image could be read (first tried: {self.paths[int(order[position])]})")

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(len(self.paths), generator=generator)
            self._epoch = epoch
        return self._order


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
