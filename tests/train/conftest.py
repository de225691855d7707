"""Tiny training configs over the bundled real photographs, and helpers comparing trained weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tokenizer.assets import sample_images
from tokenizer.losses import VQGANLossConfig
from tokenizer.models import TokenizerConfig
from tokenizer.quantizers import VQConfig
from tokenizer.train import Trainer
from tokenizer.train_config import DataConfig, OptimConfig, TrainConfig


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with the eight bundled photographs (real images, several sizes, two grayscale)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sample_images():
        shutil.copy(path, folder / path.name)
    return folder


def tiny_config(out_dir: Path, photos: Path, **overrides) -> TrainConfig:
    """An f4 VQ tokenizer on 32x32 crops: a few tens of milliseconds per step on a CPU."""
    model = TokenizerConfig(
        ch=32,
        ch_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        resolution=32,
        z_channels=16,
        quantizer=VQConfig(codebook_size=64, dim=8),
    )
    loss = VQGANLossConfig(perceptual_weight=0.0, disc_start=3, disc_width=16, disc_layers=2, disc_norm="batch")
    fields = {
        "out_dir": str(out_dir),
        "model": model,
        "loss": loss,
        "data": DataConfig(train=(str(photos),), size=32, max_zoom=1.5),
        "optim": OptimConfig(lr=2e-3, warmup_steps=2),
        "steps": 10,
        "batch_size": 2,
        "seed": 7,
        "log_every": 1,
        "eval_every": 5,
        "eval_images": 4,
        "checkpoint_every": 5,
        "keep_checkpoints": 2,
    }
    fields.update(overrides)
    return TrainConfig(**fields)


def trained_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Copies of every tensor training changes: the model's (``model.*``) and the loss's (``loss.*``: the
    discriminators, LeCam averages), without the frozen LPIPS network."""
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    state.update({f"loss.{k}": v for k, v in trainer.loss.state_dict().items() if not k.startswith("perceptual.")})
    return {k: v.detach().clone() for k, v in state.items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """The same names and bit-identical tensors; the message names the first few that differ."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"
