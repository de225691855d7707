"""Training checkpoints on disk: ``OUT/checkpoints/step-00001000/``, written atomically, the newest k kept.

A checkpoint folder holds ``config.json`` + ``model.safetensors`` (a model folder ``Tokenizer.from_pretrained``
reads directly), ``ema/`` (the EMA weights, when enabled), ``loss.safetensors`` (discriminator and loss state)
and ``trainer.pt`` (optimizer and schedule state, loaded with ``weights_only=True``). It is written into a
temporary folder and renamed into place, so a killed run leaves either the whole checkpoint or none.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^step-(\d{8,})$")


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out_dir`` as ``(step, folder)``, oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def write_checkpoint(out_dir: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Call ``write(folder)`` on a temporary folder, rename it to ``step-NNNNNNNN``, drop all but ``keep``."""
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    temporary = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    write(temporary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    for _, old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".tmp-step-*"):
        if leftover != temporary:
            shutil.rmtree(leftover, ignore_errors=True)
    return final
