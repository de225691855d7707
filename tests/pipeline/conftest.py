"""A tiny saved model and folders of generated and real images for the pipeline tests."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.assets import sample_images
from tokenizer.quantizers import VQConfig


def tiny_model(seed: int = 0) -> Tokenizer:
    """An untrained f4 VQ tokenizer with 300 codes (so shards store int16) — enough to check bookkeeping."""
    torch.manual_seed(seed)
    config = TokenizerConfig(
        ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
        quantizer=VQConfig(codebook_size=300, dim=8),
    )  # fmt: skip
    model = Tokenizer(config).eval()
    with torch.no_grad():
        model.quantize.codebook.normal_()
    return model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (what 'identical output' compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def killed_then_rerun(args: list[str], out: Path) -> Path:
    """Run the command ``args + ["--out", out]`` three times, SIGKILLed after 1.5, 2.5 and 3.5 s (interpreter
    start, mid-run, and likely late in the run), then once to the end; returns ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (1.5, 2.5, 3.5):
        process = subprocess.Popen([*args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run([*args, "--out", str(out)], check=True, env=env, capture_output=True)
    return out


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A WebDataset-style shard holding ``(name, bytes)`` members in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_image(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    array = (0.6 * ramp + 0.4 * rng.integers(0, 256, (height, width, 3))).astype(np.uint8)
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Nine generated images of three sizes in nested folders, plus the eight bundled photographs."""
    folder = tmp_path / "images"
    sizes = [(32, 32), (40, 24), (33, 47)]
    for i in range(9):
        width, height = sizes[i % 3]
        write_image(folder / f"sub{i % 2}" / f"gen{i}.png", width, height, seed=i)
    for path in sample_images():
        shutil.copy(path, folder / path.name)
    return folder
