"""The trainer end to end on tiny models: exact resume, DDP equality, overfitting real photos, checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file, save_file

from tokenizer import cli
from tokenizer.checkpoints import list_checkpoints
from tokenizer.losses import VQGANLossConfig
from tokenizer.models import Tokenizer
from tokenizer.quantizers import FSQConfig
from tokenizer.train import Trainer, lr_factor
from tokenizer.train_config import DataConfig, OptimConfig

from .conftest import assert_identical, tiny_config, trained_state


def test_resume_is_bit_identical(tmp_path, photos):
    straight = Trainer(tiny_config(tmp_path / "straight", photos))
    straight.train()

    first = Trainer(tiny_config(tmp_path / "split", photos, checkpoint_every=100))
    first.train(until=5)
    assert [step for step, _ in list_checkpoints(tmp_path / "split")] == [5]
    second = Trainer(tiny_config(tmp_path / "split", photos, checkpoint_every=100), resume=True)
    assert second.step == 5
    second.train()

    assert second.step == straight.step == 10
    assert_identical(trained_state(straight), trained_state(second))
    # The GAN was on for steps 3..9 (disc_start=3), so the discriminator really trained and was restored.
    records = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "train" and r["step"] > 3 and r["d_loss"] != 0 for r in records)
    assert Trainer(tiny_config(tmp_path / "fresh", photos)).step == 0


def test_resume_refuses_a_changed_config(tmp_path, photos):
    Trainer(tiny_config(tmp_path / "run", photos)).train(until=1)
    changed = tiny_config(tmp_path / "run", photos, optim=OptimConfig(lr=1e-3, warmup_steps=2))
    with pytest.raises(ValueError, match="optim"):
        Trainer(changed, resume=True)


def test_checkpoints_rotate_and_load_as_models(tmp_path, photos):
    trainer = Trainer(tiny_config(tmp_path / "run", photos, steps=6, checkpoint_every=2, ema_decay=0.5))
    trainer.train()
    found = list_checkpoints(tmp_path / "run")
    assert [step for step, _ in found] == [4, 6]  # keep_checkpoints=2
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    folder = found[-1][1]
    loaded = Tokenizer.from_pretrained(folder)
    assert_identical(loaded.state_dict(), trainer.model.state_dict())
    ema = Tokenizer.from_pretrained(folder / "ema")
    assert_identical(ema.state_dict(), trainer.ema.state_dict())
    assert not all(torch.equal(a, b) for a, b in zip(ema.parameters(), loaded.parameters()))


def test_evaluation_writes_metrics_and_a_grid(tmp_path, photos):
    Trainer(tiny_config(tmp_path / "run", photos, steps=5)).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [5]
    assert {"psnr", "ssim", "code_usage", "perplexity"} <= evals[0].keys()
    assert 0 < evals[0]["code_usage"] <= 1
    grid = Image.open(tmp_path / "run" / "samples" / "step-00000005.png")
    assert grid.size == (4 * 32, 2 * 32)  # four originals over four reconstructions


def test_overfitting_real_photos_raises_psnr(tmp_path, photos):
    config = tiny_config(
        tmp_path / "run",
        photos,
        steps=120,
        batch_size=8,
        eval_every=1000,
        eval_images=8,
        checkpoint_every=1000,
        loss=dataclasses.replace(tiny_config(tmp_path, photos).loss, disc_start=10_000),
        data=DataConfig(train=(str(photos),), size=32, random_crop=False, flip=False, max_zoom=1.0),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, min_lr_ratio=0.3),
    )
    trainer = Trainer(config)
    before = trainer.evaluate()["psnr"]
    trainer.train()
    after = trainer.evaluate()["psnr"]
    assert after > before + 6.0, (before, after)
    assert after > 18.0, after


def test_a_corrupt_image_is_skipped_not_fatal(tmp_path, photos, caplog):
    (photos / "broken.png").write_bytes(Image.open(next(photos.glob("*.png"))).tobytes()[:500])
    (photos / "truncated.png").write_bytes((photos / "astronaut.png").read_bytes()[:300])
    with caplog.at_level(logging.WARNING):
        Trainer(tiny_config(tmp_path / "run", photos, steps=12, batch_size=4, eval_images=0)).train()
    assert "broken.png" in caplog.text or "truncated.png" in caplog.text


def test_lr_schedule_warms_up_then_decays():
    factors = [lr_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


def test_cli_trains_and_resumes(tmp_path, photos):
    config = tiny_config(tmp_path / "unused", photos, steps=4, eval_every=100, checkpoint_every=100)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    out = tmp_path / "cli-run"
    assert cli.main(["train", "--config", str(path), "--out-dir", str(out), "--until", "2"]) == 0
    assert [s for s, _ in list_checkpoints(out)] == [2]
    assert cli.main(["train", "--config", str(path), "--out-dir", str(out), "--resume"]) == 0
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]


def test_a_new_run_over_an_old_one_is_refused_unless_overwritten(tmp_path, photos, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_config(tmp_path / "unused", photos, steps=1).to_dict()))
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["train", "--config", str(path), "--out-dir", str(out)]
    assert cli.main(args) == 0
    log_lines = (out / "log.jsonl").read_text().splitlines()
    assert cli.main(args) == 2  # no --resume: the earlier run is kept as it was
    assert "--resume" in capsys.readouterr().err
    assert (out / "log.jsonl").read_text().splitlines() == log_lines
    assert [s for s, _ in list_checkpoints(out)] == [1]
    assert cli.main([*args, "--overwrite"]) == 0  # starts again: one run's log, not two
    assert len((out / "log.jsonl").read_text().splitlines()) == len(log_lines)
    assert (out / "notes.txt").read_text() == "mine"  # what the trainer did not write is left alone


EXAMPLE_CONFIG = Path(__file__).parents[2] / "tools" / "configs" / "vqgan_f16_vq.yaml"


def test_an_example_config_names_its_placeholders_and_leaves_no_folder(tmp_path, photos, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "f16"
    args = ["train", "--config", str(EXAMPLE_CONFIG), "--out-dir", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "data.train: input 'PLACEHOLDER/train-images' does not exist" in err
    assert f"relative paths are read from {tmp_path}" in err and "--data PATH" in err
    # --data finds the photos; the next placeholder, the LPIPS weights, is named by its YAML key
    assert cli.main([*args, "--data", str(photos)]) == 2
    err = capsys.readouterr().err
    assert "loss.vgg_path: weight file 'weights/vgg16-397923af.pth' does not exist" in err
    assert "Config" not in err  # no class attribute (VQGANLossConfig.vgg_path): the YAML has no such name
    assert not (tmp_path / "runs").exists()


def test_data_on_the_command_line_replaces_data_train(tmp_path, photos, one_thread):
    config = tiny_config(tmp_path / "unused", tmp_path / "nowhere", steps=1, eval_images=0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    chosen = [str(photos / "astronaut.png"), str(photos / "coffee.png")]
    out = tmp_path / "run"
    args = ["train", "--config", str(path), "--out-dir", str(out), "--data", chosen[0], "--data", chosen[1]]
    assert cli.main(args) == 0
    state = torch.load(list_checkpoints(out)[-1][1] / "trainer.pt", weights_only=True)
    saved = json.loads(state["config"])["data"]
    assert saved["train"] == chosen
    assert saved == {**json.loads(json.dumps(config.to_dict()))["data"], "train": chosen}  # the rest: the file's


@pytest.mark.parametrize("failure", ["missing data", "empty data", "missing eval", "missing LPIPS weights"])
def test_a_failed_start_leaves_no_run_folder(tmp_path, photos, failure):
    empty = tmp_path / "empty"
    empty.mkdir()
    lpips = {"perceptual_weight": 1.0, "vgg_path": str(tmp_path / "vgg16.pth"), "lin_path": str(tmp_path / "vgg.pth")}
    changes, named = {
        "missing data": ({"data": DataConfig(train=(str(tmp_path / "nowhere"),), size=32)}, "data.train: input"),
        "empty data": ({"data": DataConfig(train=(str(empty),), size=32)}, "data.train: no images or videos"),
        "missing eval": ({"data": DataConfig(train=(str(photos),), eval=("held-out",), size=32)}, "data.eval: input"),
        "missing LPIPS weights": ({"loss": VQGANLossConfig(disc_width=16, **lpips)}, "loss.vgg_path: weight file"),
    }[failure]
    with pytest.raises((FileNotFoundError, ValueError), match=named):
        Trainer(tiny_config(tmp_path / "runs" / "new", photos, **changes))
    assert not (tmp_path / "runs").exists()


def test_a_failed_start_with_overwrite_deletes_nothing(tmp_path, photos, one_thread):
    out = tmp_path / "run"
    Trainer(tiny_config(out, photos, steps=1, eval_images=0)).train()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(FileNotFoundError, match="data.train"):
        Trainer(tiny_config(out, tmp_path / "nowhere", steps=1), overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and (out / "log.jsonl").exists()


# -- two processes on gloo ---------------------------------------------------------------------------


def _ddp_config(out_dir: Path, photos: Path, batch_size: int):
    """k-means seeding and dead-code restarts draw from rank 0's batch, so a one-process run would seed
    differently; without them both runs compute the same thing."""
    config = tiny_config(out_dir, photos, steps=4, batch_size=batch_size, checkpoint_every=2, keep_checkpoints=5)
    quantizer = dataclasses.replace(config.model.quantizer, kmeans_init=False, dead_code_threshold=0.0)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, quantizer=quantizer))


def _ddp_worker(rank: int, world: int, init_file: str, root: str, photos: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores: more threads only contend
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer = Trainer(_ddp_config(Path(root) / "ddp", Path(photos), batch_size=1))
        trainer.train()
        save_file({k: v.contiguous() for k, v in trained_state(trainer).items()}, f"{root}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_processes_agree_and_match_one_process(tmp_path, photos):
    """Two ranks with one image each take the same samples as one process with two (see tokenizer.data.stream)."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(photos)), nprocs=2, join=True)
    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    assert_identical(rank0, rank1)

    single = Trainer(_ddp_config(tmp_path / "single", photos, batch_size=2))
    single.train(until=2)
    # Before the GAN starts (step 3) the averaged gradients equal the two-image batch's, up to summation order.
    # Adam turns a gradient that is zero up to rounding (biases in front of a GroupNorm with one channel per
    # group) into a step of up to lr either way, so single parameters may differ by ~lr; typical ones may not.
    ddp_step2 = Tokenizer.from_pretrained(tmp_path / "ddp" / "checkpoints" / "step-00000002").state_dict()
    single_step2 = single.model.state_dict()
    differences = torch.cat([(ddp_step2[k].float() - v.float()).abs().flatten() for k, v in single_step2.items()])
    assert differences.max() <= 2 * 2e-3
    # "typical": a hundredth of the learning rate (warm-up makes the steps so far at most lr = 2e-3); summation
    # order (which varies with memory alignment and earlier tests) moves the median by a few 1e-6
    assert differences.median() < 2e-5, differences.median()
    torch.testing.assert_close(ddp_step2["quantize.codebook"], single_step2["quantize.codebook"], rtol=0, atol=1e-5)
    torch.testing.assert_close(ddp_step2["quantize.cluster_size"], single_step2["quantize.cluster_size"])


def test_the_example_configs_parse():
    from tokenizer.models import VideoTokenizerConfig
    from tokenizer.train_config import load_train_config

    configs = Path(__file__).parents[2] / "tools" / "configs"
    config = load_train_config(configs / "vqgan_f16_vq.yaml")
    assert config.model.downsample_factor == 16
    assert config.model.quantizer.codebook_size == 16384
    assert config.loss.perceptual_weight > 0 and config.loss.vgg_path
    video = load_train_config(configs / "video_f8t4_fsq.yaml")
    assert isinstance(video.model, VideoTokenizerConfig) and video.model.temporal_factor == 4
    assert video.data.clip_frames == 17 and video.loss.disc_dims == 3


def test_bf16_autocast_keeps_the_quantizer_in_fp32(tmp_path, photos):
    trainer = Trainer(tiny_config(tmp_path / "run", photos, steps=2, mixed_precision="bf16", eval_images=0))
    logs = trainer.train()
    assert all(math.isfinite(v) for v in logs.values())
    with trainer._autocast():
        latents = trainer.model.encode_to_latents(torch.rand(1, 3, 32, 32) * 2 - 1)
        out = trainer.model.quantize(latents)
    assert latents.dtype == torch.bfloat16
    assert out.quantized.dtype == torch.float32


def test_gradient_accumulation_equals_a_larger_batch(tmp_path, photos):
    """Two micro-batches of one image read the samples of one batch of two (see tokenizer.data.stream); with
    a stateless quantizer (FSQ) and the GAN off, the averaged gradients and so the weights agree."""
    base = tiny_config(tmp_path / "x", photos, steps=3, eval_images=0, checkpoint_every=100)
    model = dataclasses.replace(base.model, quantizer=FSQConfig(levels=(5, 5, 5), dim=8))
    loss = dataclasses.replace(base.loss, disc_start=100)
    big = Trainer(dataclasses.replace(base, out_dir=str(tmp_path / "big"), model=model, loss=loss, batch_size=2))
    big.train()
    accumulated = Trainer(
        dataclasses.replace(
            base, out_dir=str(tmp_path / "acc"), model=model, loss=loss, batch_size=1, grad_accumulation=2
        )
    )
    accumulated.train()
    # As in the two-process test: Adam may turn a rounding-level gradient into a step of ~lr either way.
    pairs = zip(big.model.state_dict().values(), accumulated.model.state_dict().values())
    differences = torch.cat([(a.float() - b.float()).abs().flatten() for a, b in pairs])
    assert differences.max() <= 2 * 3 * 2e-3
    # "typical": a hundredth of the learning rate (warm-up makes the steps so far at most lr = 2e-3); summation
    # order (which varies with memory alignment and earlier tests) moves the median by a few 1e-6
    assert differences.median() < 2e-5, differences.median()


def test_chroma_jitter_reaches_the_training_samples(tmp_path):
    """data.chroma_jitter turns the hues of the trainer's own samples and keeps their luma."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((96 + rng.integers(0, 64, size=(48, 48, 3))).astype(np.uint8)).save(photos / "muted.png")
    plain = Trainer(tiny_config(tmp_path / "plain", photos))
    data = DataConfig(train=(str(photos),), size=32, max_zoom=1.5, chroma_jitter=1.0)
    jittered = Trainer(tiny_config(tmp_path / "jittered", photos, data=data))
    assert plain.policy.chroma_jitter == 0.0 and jittered.policy.chroma_jitter == 1.0
    a, b = (next(t._batches()) for t in (plain, jittered))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((a * luma).sum(1), (b * luma).sum(1), atol=1e-5, rtol=0)  # muted: nothing clamped
    assert ((a - b).abs().amax(dim=(1, 2, 3)) > 0.02).all()  # every sample's hues turned
