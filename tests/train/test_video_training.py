"""Training the causal video tokenizer on videos and mixed image + video folders: the MediaStream contract
(samples are functions of (seed, g), one kind per micro-batch), exact resume, skipped bad videos, evaluation."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tests._video_synth import make_test_clip, read_counter
from tokenizer import metrics
from tokenizer.assets import sample_images
from tokenizer.data import ClipStream, CropPolicy, ImageStream, MediaStream, find_media
from tokenizer.data.video import ClipSpec, VideoReadError, probe_video, read_clip
from tokenizer.losses import VQGANLossConfig
from tokenizer.models import VideoTokenizerConfig
from tokenizer.quantizers import FSQConfig
from tokenizer.train import Trainer
from tokenizer.train_config import DataConfig, OptimConfig, TrainConfig

from .conftest import assert_identical, tiny_config, trained_state

CLIP = ClipSpec(frames=5, stride=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three short H.264 clips of two sizes."""
    folder = tmp_path_factory.mktemp("videos")
    make_test_clip(folder / "shapes.mp4", frames=20, width=32, height=32, pattern="shapes")
    make_test_clip(folder / "pan.mp4", frames=14, width=40, height=32, pattern="pan")
    make_test_clip(folder / "nested" / "counter.mp4", frames=24, width=32, height=32, pattern="counter")
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, videos) -> Path:
    """The three clips plus two real photographs."""
    folder = tmp_path_factory.mktemp("mixed")
    shutil.copytree(videos, folder, dirs_exist_ok=True)
    for path in sample_images()[:2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def video_config(out_dir: Path, train: Path, **overrides) -> TrainConfig:
    """A causal f4 video tokenizer (tf=4) with FSQ on 32x32 crops of 5-frame clips; both discriminators."""
    model = VideoTokenizerConfig(
        ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32, z_channels=8,
        temporal_factor=4, quantizer=FSQConfig(levels=(5, 5, 5), dim=8),
    )  # fmt: skip
    loss = VQGANLossConfig(perceptual_weight=0.0, disc_start=2, disc_width=16, disc_layers=2, disc_dims=3)
    fields = {
        "out_dir": str(out_dir),
        "model": model,
        "loss": loss,
        "data": DataConfig(train=(str(train),), size=32, max_zoom=1.5, clip_frames=5, image_fraction=0.5),
        "optim": OptimConfig(lr=2e-3, warmup_steps=2),
        "steps": 6,
        "batch_size": 2,
        "seed": 3,
        "log_every": 1,
        "eval_every": 1000,
        "eval_images": 2,
        "checkpoint_every": 1000,
    }
    fields.update(overrides)
    return TrainConfig(**fields)


def _records(out_dir: Path, kind: str) -> list[dict]:
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))


# --- training -----------------------------------------------------------------------------------------------


def test_trains_on_videos_only(tmp_path, videos):
    trainer = Trainer(video_config(tmp_path / "run", videos, steps=3, loss=_loss(disc_start=1)))
    assert trainer.train_images == [] and len(trainer.train_videos) == 3
    disc_3d = [p.detach().clone() for p in trainer.loss.discriminator_3d.parameters()]
    logs = trainer.train()
    assert all(math.isfinite(v) for v in logs.values())
    records = _records(tmp_path / "run", "train")
    assert [r["clip_share"] for r in records] == [1.0, 1.0, 1.0]
    assert all(r["d_loss"] != 0 for r in records[1:])
    assert any(not torch.equal(a, b) for a, b in zip(disc_3d, trainer.loss.discriminator_3d.parameters()))


def _loss(**changes) -> VQGANLossConfig:
    base = VQGANLossConfig(perceptual_weight=0.0, disc_start=2, disc_width=16, disc_layers=2, disc_dims=3)
    return dataclasses.replace(base, **changes)


def test_trains_on_mixed_data_with_both_kinds_of_batch(tmp_path, mixed):
    config = video_config(tmp_path / "run", mixed, steps=5, loss=_loss(disc_start=1))
    trainer = Trainer(config)
    shapes: list[tuple[int, ...]] = []
    forward = trainer.model.forward
    trainer.model.forward = lambda pixels: (shapes.append(tuple(pixels.shape)), forward(pixels))[1]
    frame_disc = [p.detach().clone() for p in trainer.loss.discriminator.parameters()]
    disc_3d = [p.detach().clone() for p in trainer.loss.discriminator_3d.parameters()]
    trainer.train()
    assert {(2, 3, 32, 32), (2, 3, 5, 32, 32)} == set(shapes[:5]), shapes  # the five training micro-batches
    records = _records(tmp_path / "run", "train")
    shares = [r["clip_share"] for r in records]
    assert shares == [float(len(s) == 5) for s in shapes[:5]]
    # The GAN is on from step 1: both kinds of step trained the discriminators.
    assert any(r["d_loss"] != 0 for r in records[1:] if r["clip_share"] == 0)
    assert any(r["d_loss"] != 0 for r in records[1:] if r["clip_share"] == 1)
    assert any(not torch.equal(a, b) for a, b in zip(frame_disc, trainer.loss.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(disc_3d, trainer.loss.discriminator_3d.parameters()))


def test_resume_on_mixed_data_is_bit_identical(tmp_path, mixed):
    straight = Trainer(video_config(tmp_path / "straight", mixed))
    straight.train()
    first = Trainer(video_config(tmp_path / "split", mixed))
    first.train(until=3)
    second = Trainer(video_config(tmp_path / "split", mixed), resume=True)
    assert second.step == 3
    second.train()
    assert second.step == straight.step == 6
    assert_identical(trained_state(straight), trained_state(second))
    records = _records(tmp_path / "straight", "train")
    assert {r["clip_share"] for r in records} == {0.0, 1.0}, "the run did not see both kinds of batch"
    assert any(r["d_loss"] != 0 for r in records if r["step"] > 2)
    split = _records(tmp_path / "split", "train")
    assert [r["loss"] for r in split] == [r["loss"] for r in records]


# --- MediaStream ----------------------------------------------------------------------------------------------


def _policy(**changes) -> CropPolicy:
    return dataclasses.replace(CropPolicy(size=32, random_crop=True, flip=True, max_zoom=1.5), **changes)


def test_find_media_splits_images_and_videos(mixed):
    images, videos = find_media([mixed])
    assert [p.name for p in images] == sorted(p.name for p in sample_images()[:2])
    assert sorted(p.name for p in videos) == ["counter.mp4", "pan.mp4", "shapes.mp4"]
    assert find_media([videos[0]]) == ([], [videos[0]])
    with pytest.raises(FileNotFoundError, match="missing"):
        find_media([mixed / "missing"])


def test_a_sample_depends_only_on_seed_and_number(mixed):
    images, videos = find_media([mixed])

    def stream(seed: int) -> MediaStream:
        return MediaStream(images, videos, _policy(), seed, batch_size=2, clip=CLIP, image_fraction=0.5)

    numbers = [0, 1, 2, 3, 9, 14, 15, 40, 41, 7]
    forward = stream(seed=5)
    first = {g: forward[g] for g in numbers}
    assert {first[g].ndim for g in numbers} == {3, 4}, "the numbers should cover both kinds"
    for g, sample in first.items():
        expected = (3, 32, 32) if forward.kind(g // 2) == "image" else (3, 5, 32, 32)
        assert sample.shape == expected and sample.dtype == torch.float32
        assert sample.min() >= -1 and sample.max() <= 1
    fresh = stream(seed=5)
    for g in reversed(numbers):
        assert torch.equal(fresh[g], first[g]), f"sample {g} differs"
    other = stream(seed=6)
    assert sum(not torch.equal(other[g], first[g]) for g in numbers if other[g].shape == first[g].shape) >= 5
    # A micro-batch holds one kind; a one-kind training set is that kind throughout.
    for u in range(8):
        assert forward[2 * u].ndim == forward[2 * u + 1].ndim
    assert {MediaStream([], videos, _policy(), 0, 2, CLIP).kind(u) for u in range(20)} == {"video"}


def test_the_kind_split_follows_image_fraction(mixed):
    images, videos = find_media([mixed])  # two images, three videos
    for fraction, expected in ((0.3, 0.3), (0.8, 0.8), (None, 0.4), (0.0, 0.0), (1.0, 1.0)):
        stream = MediaStream(images, videos, _policy(), seed=1, batch_size=4, clip=CLIP, image_fraction=fraction)
        share = sum(stream.kind(u) == "image" for u in range(200)) / 200
        assert abs(share - expected) <= 0.1, (fraction, share)


def test_image_samples_are_those_of_image_stream(mixed):
    images = find_media([mixed])[0]
    media = MediaStream(images, [], _policy(), seed=4, batch_size=2, clip=CLIP)
    plain = ImageStream(images, _policy(), seed=4)
    for g in range(6):
        assert torch.equal(media[g], plain[g])


def test_clips_are_consecutive_frames_from_a_random_valid_start(videos):
    counter = videos / "nested" / "counter.mp4"  # 24 frames
    spec = ClipSpec(frames=5, stride=2)  # spans 9 frames: starts 0 .. 15
    stream = ClipStream([counter], _policy(random_crop=False, flip=False, max_zoom=1.0), seed=0, clip=spec)
    starts = []
    for g in range(30):
        shown = [read_counter(frame) for frame in stream[g].unbind(1)]
        assert shown == list(range(shown[0], shown[0] + 9, 2)), shown
        starts.append(shown[0])
    assert min(starts) >= 0 and max(starts) <= 15
    assert len(set(starts)) >= 8, starts
    # Mirroring is all frames or none, and does not change which frames or crop were drawn.
    flipping = ClipStream([counter], _policy(max_zoom=1.0), seed=0, clip=spec)
    still = ClipStream([counter], _policy(max_zoom=1.0, flip=False), seed=0, clip=spec)
    mirrored = [not torch.equal(flipping[g], still[g]) for g in range(12)]
    assert all(torch.equal(flipping[g], still[g].flip(-1)) for g in range(12) if mirrored[g])
    assert 0 < sum(mirrored) < 12


def test_unreadable_and_short_videos_are_replaced_and_logged_once(tmp_path, videos, caplog):
    good = videos / "shapes.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    short = make_test_clip(tmp_path / "short.mp4", frames=4, width=32, height=32)
    stream = ClipStream([broken, good, short], _policy(), seed=0, clip=CLIP)
    with caplog.at_level(logging.WARNING, logger="tokenizer.data.stream"):
        for g in range(9):
            assert stream[g].shape == (3, 5, 32, 32)
    for name in ("broken.mp4", "short.mp4"):
        mentions = [r for r in caplog.records if name in r.getMessage()]
        assert len(mentions) == 1 and mentions[0].levelno == logging.WARNING, name
    assert "fewer than one clip needs" in caplog.text
    with pytest.raises(VideoReadError, match="no training video could be read"):
        ClipStream([broken, short], _policy(), seed=0, clip=CLIP)[0]


def test_the_trainer_skips_a_truncated_video(tmp_path, videos, caplog):
    folder = _mkdir(tmp_path / "data")
    shutil.copytree(videos, folder, dirs_exist_ok=True)
    (folder / "truncated.mp4").write_bytes((videos / "pan.mp4").read_bytes()[:400])
    config = video_config(tmp_path / "run", folder, steps=2, eval_images=0, loss=_loss(disc_start=100))
    with caplog.at_level(logging.WARNING):
        Trainer(config).train()  # 4 samples: the first epoch of four videos meets the bad one
    assert "truncated.mp4" in caplog.text


# --- errors ----------------------------------------------------------------------------------------------


def test_an_image_model_refuses_videos(tmp_path, mixed):
    with pytest.raises(ValueError, match=r"3 video file\(s\).*image tokenizer"):
        Trainer(tiny_config(tmp_path / "run", mixed))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"clip_frames": 6}, r"data\.clip_frames=6 must be 1 \+ k \* the model's temporal_factor 4"),
        ({"clip_frames": 0}, r"data\.clip_frames must be a positive integer"),
        ({"clip_stride": 0}, r"data\.clip_stride must be a positive integer"),
        ({"image_fraction": 1.5}, r"data\.image_fraction must lie in \[0, 1\]"),
    ],
)
def test_bad_clip_settings_name_the_field(tmp_path, data, message):
    raw = video_config(tmp_path, tmp_path).to_dict()
    raw["data"].update(data)
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(raw)


def test_a_video_model_config_round_trips(tmp_path):
    raw = json.loads(json.dumps(video_config(tmp_path, tmp_path).to_dict()))
    assert raw["model"]["model"] == "video" and raw["data"]["clip_frames"] == 5
    assert TrainConfig.from_dict(raw) == video_config(tmp_path, tmp_path)


# --- evaluation ------------------------------------------------------------------------------------------


def test_evaluation_reports_video_metrics_and_writes_a_side_by_side(tmp_path, mixed):
    trainer = Trainer(video_config(tmp_path / "run", mixed, eval_images=2))
    results = trainer.evaluate()
    assert {"psnr", "ssim", "video_psnr", "video_ssim", "code_usage", "perplexity"} <= results.keys()
    assert _records(tmp_path / "run", "eval") == [{"kind": "eval", "step": 0, **results}]
    # The figure is the mean over every frame of the first clip of each eval video (centre crop, no flip).
    first_videos = find_media([mixed])[1][:2]
    clips = torch.stack([read_clip(p, CLIP, size=32, resize=32) for p in first_videos])
    with torch.no_grad():
        fake = trainer.model.eval()(clips)[0].clamp(-1, 1)
    frames = (clips.transpose(1, 2).flatten(0, 1), fake.transpose(1, 2).flatten(0, 1))
    assert results["video_psnr"] == pytest.approx(metrics.psnr(*frames).mean().item(), rel=1e-5)
    assert results["video_ssim"] == pytest.approx(metrics.ssim(*frames).mean().item(), rel=1e-5)
    sample = tmp_path / "run" / "samples" / "step-00000000.mp4"
    info = probe_video(sample)
    assert (info.frames, info.width, info.height) == (5, 64, 32)  # original | reconstruction
    side_by_side = read_clip(sample, CLIP)
    assert (side_by_side[..., :32] - clips[0]).abs().mean() < 0.05  # the left half is the original clip
    assert (tmp_path / "run" / "samples" / "step-00000000.png").is_file()


# --- two processes ---------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init_file: str, root: str, data: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores: more threads only contend
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        config = video_config(Path(root) / "ddp", Path(data), steps=3, batch_size=1, loss=_loss(disc_start=0))
        trainer = Trainer(config)
        trainer.train()
        save_file({k: v.contiguous() for k, v in trained_state(trainer).items()}, f"{root}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_processes_with_different_kinds_of_batch_stay_identical(tmp_path, mixed):
    """One rank may draw images while the other draws clips (the 3-D discriminator then has a gradient on one
    rank only): the ranks still average the same gradients and hold the same weights."""
    images, videos = find_media([mixed])
    stream = MediaStream(images, videos, _policy(), seed=3, batch_size=1, clip=CLIP, image_fraction=0.5)
    assert any(stream.kind(2 * s) != stream.kind(2 * s + 1) for s in range(3)), "pick a seed where ranks differ"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(mixed)), nprocs=2, join=True)
    assert_identical(load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors"))


def test_a_checkpoint_saved_before_the_clip_settings_resumes(tmp_path):
    """Configs saved without data.clip_frames, clip_stride and image_fraction take their defaults on resume."""
    photos = _mkdir(tmp_path / "photos")
    for path in sample_images()[:2]:
        shutil.copy(path, photos / path.name)
    config = tiny_config(tmp_path / "run", photos, steps=2, eval_images=0)
    Trainer(config).train(until=1)
    [state_file] = (tmp_path / "run" / "checkpoints").glob("step-*/trainer.pt")
    state = torch.load(state_file, weights_only=True)
    saved = json.loads(state["config"])
    for name in ("clip_frames", "clip_stride", "image_fraction"):
        del saved["data"][name]
    state["config"] = json.dumps(saved)
    torch.save(state, state_file)
    assert Trainer(config, resume=True).step == 1
