"""ImageStream and StepBatches: epoch coverage, pure-function samples, bad files, and rank/step arithmetic."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tokenizer.data import CropPolicy, ImageReadError, ImageStream, StepBatches, to_uint8

SIZE = 8


def _colour(k: int) -> tuple[int, int, int]:
    return (5 + 31 * k, 250 - 23 * k, 3 + 17 * k)


def _flat_images(folder: Path, count: int) -> list[Path]:
    """``count`` flat-coloured images of assorted sizes; image k has colour ``_colour(k)``."""
    sizes = [(8, 8), (11, 9), (9, 13), (23, 8), (8, 31), (17, 17), (12, 10)]
    paths = []
    for k in range(count):
        path = folder / f"img{k}.png"
        Image.new("RGB", sizes[k % len(sizes)], _colour(k)).save(path)
        paths.append(path)
    return paths


def _which(sample: torch.Tensor, count: int) -> int:
    """The index of the flat image a sample came from (asserting the sample is flat)."""
    assert sample.dtype == torch.float32 and sample.shape == (3, SIZE, SIZE)
    pixels = to_uint8(sample).reshape(-1, 3)
    assert (pixels == pixels[0]).all()
    return [_colour(k) for k in range(count)].index(tuple(int(v) for v in pixels[0]))


def _policy() -> CropPolicy:
    return CropPolicy(size=SIZE, random_crop=True, flip=True, max_zoom=1.5)


def _bad_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"not a picture")
    return path


# --- ImageStream -----------------------------------------------------------------------------------


def test_every_image_once_per_epoch_and_epochs_are_reshuffled(tmp_path):
    n = 7
    stream = ImageStream(_flat_images(tmp_path, n), _policy(), seed=3)
    assert len(stream) == n
    orders = []
    for epoch in range(4):
        order = [_which(stream[epoch * n + i], n) for i in range(n)]
        assert sorted(order) == list(range(n)), f"epoch {epoch} does not cover every image once: {order}"
        orders.append(order)
    assert len({tuple(o) for o in orders}) > 1, "every epoch used the same order"
    other = ImageStream(stream.paths, _policy(), seed=4)
    assert [_which(other[i], n) for i in range(n)] != orders[0], "the seed does not change the order"


def test_a_sample_depends_only_on_its_number(tmp_path):
    photo = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (29, 41, 3), dtype=np.uint8)).save(photo)
    paths = [photo, *_flat_images(tmp_path, 4)]
    numbers = [0, 1, 4, 5, 12, 3, 40, 2]
    forward = ImageStream(paths, _policy(), seed=9)
    first = {g: forward[g] for g in numbers}
    # A fresh stream read in another order (jumping between epochs) gives the same tensors.
    shuffled = ImageStream(paths, _policy(), seed=9)
    for g in reversed(numbers):
        assert torch.equal(shuffled[g], first[g]), f"sample {g} differs"
    assert torch.equal(forward[numbers[0]], first[numbers[0]])


def test_augmentation_differs_between_samples_of_one_image(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (29, 41, 3), dtype=np.uint8)
    copies = [tmp_path / "noise.png", tmp_path / "same noise.png"]
    for path in copies:
        Image.fromarray(array).save(path)
    stream = ImageStream(copies, _policy(), seed=0)
    # Two copies of one picture: every sample, within an epoch and across epochs, is its own augmentation.
    samples = [stream[g] for g in range(6)]
    assert not torch.equal(samples[0], samples[1])
    assert len({tuple(s.flatten().tolist()) for s in samples}) >= 5
    shifted = ImageStream(copies, _policy(), seed=1)
    assert not torch.equal(shifted[0], samples[0]), "the seed does not reach the augmentation"


def test_an_unreadable_image_is_replaced_and_logged_once(tmp_path, caplog):
    n_good = 5
    good = _flat_images(tmp_path, n_good)
    bad = _bad_file(tmp_path, "corrupt.png")
    paths = [*good[:2], bad, *good[2:]]
    stream = ImageStream(paths, _policy(), seed=1)
    with caplog.at_level(logging.WARNING, logger="tokenizer.data.stream"):
        for epoch in range(3):
            seen = [_which(stream[epoch * len(paths) + i], n_good) for i in range(len(paths))]
            # The bad file's slot is filled by the next image of the epoch: every readable image appears,
            # and exactly one appears twice, in two cyclically adjacent slots.
            assert sorted(set(seen)) == list(range(n_good))
            twice = [k for k in set(seen) if seen.count(k) == 2]
            assert len(twice) == 1
            first, second = [i for i, k in enumerate(seen) if k == twice[0]]
            assert second - first in (1, len(paths) - 1)
    mentions = [r for r in caplog.records if "corrupt.png" in r.getMessage()]
    assert len(mentions) == 1 and mentions[0].levelno == logging.WARNING


def test_no_readable_image_raises_naming_a_file(tmp_path, caplog):
    bad = [_bad_file(tmp_path, f"bad{k}.png") for k in range(3)]
    stream = ImageStream(bad, _policy(), seed=0)
    caplog.set_level(logging.WARNING, logger="tokenizer.data.stream")
    with pytest.raises(ImageReadError) as info:
        stream[4]
    assert any(str(p) in str(info.value) for p in bad)
    assert len([r for r in caplog.records if "bad" in r.getMessage()]) == 3
    with pytest.raises(ImageReadError, match="only.png"):
        ImageStream([_bad_file(tmp_path, "only.png")], _policy(), seed=0)[0]


def test_an_empty_list_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        ImageStream([], _policy(), seed=0)


# --- StepBatches -----------------------------------------------------------------------------------


def _take(sampler: StepBatches, count: int) -> list[list[int]]:
    return list(itertools.islice(iter(sampler), count))


@pytest.mark.parametrize(("world", "accumulation", "batch"), [(1, 1, 1), (3, 2, 5), (2, 3, 1), (4, 1, 7)])
def test_batches_follow_the_documented_formula(world, accumulation, batch):
    for rank in range(world):
        got = _take(StepBatches(0, batch, accumulation, world, rank), 6 * accumulation)
        expected = [
            [((step * accumulation + micro) * world + rank) * batch + i for i in range(batch)]
            for step in range(6)
            for micro in range(accumulation)
        ]
        assert got == expected


@pytest.mark.parametrize(("world", "accumulation", "batch"), [(2, 1, 3), (3, 2, 5), (5, 3, 2)])
def test_ranks_are_disjoint_and_together_read_what_one_process_reads(world, accumulation, batch):
    micro_steps = 4 * accumulation
    per_rank = [_take(StepBatches(0, batch, accumulation, world, r), micro_steps) for r in range(world)]
    single = _take(StepBatches(0, world * batch, accumulation, 1, 0), micro_steps)
    for m in range(micro_steps):
        together = [g for r in range(world) for g in per_rank[r][m]]
        assert together == single[m]
    every = [g for batches in per_rank for b in batches for g in b]
    assert len(every) == len(set(every)), "two ranks read the same sample"
    assert sorted(every) == list(range(micro_steps * world * batch)), "a sample was skipped"


@pytest.mark.parametrize("start", [1, 7, 1000])
def test_starting_at_a_step_continues_the_uninterrupted_sequence(start):
    world, accumulation, batch, rank = 3, 2, 5, 1
    straight = _take(StepBatches(0, batch, accumulation, world, rank), (start + 3) * accumulation)
    resumed = _take(StepBatches(start, batch, accumulation, world, rank), 3 * accumulation)
    assert resumed == straight[start * accumulation :]


def test_a_data_loader_over_the_stream_resumes_exactly(tmp_path):
    paths = _flat_images(tmp_path, 5)
    stream = ImageStream(paths, _policy(), seed=2)

    def batches(start: int, count: int) -> list[torch.Tensor]:
        loader = DataLoader(stream, batch_sampler=StepBatches(start, 2, 1, 2, 1))
        return list(itertools.islice(loader, count))

    straight, resumed = batches(0, 5), batches(3, 2)
    assert all(b.shape == (2, 3, SIZE, SIZE) for b in straight)
    for a, b in zip(straight[3:], resumed, strict=True):
        assert torch.equal(a, b)
