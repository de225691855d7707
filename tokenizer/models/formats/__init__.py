"""Pretrained tokenizers of other projects: one module per family, one front door.

A family module (``taming``, ``llamagen``, ...) knows one project's checkpoint layout and provides:

- ``NAME``: the ``--format`` name; ``DESCRIPTION``: one line for ``tokenizer inspect``;
- ``detect(checkpoint) -> bool``: whether a ``Checkpoint`` (``reading.read_checkpoint``) is of this family,
  from its tensor names and config alone;
- ``infer_config(checkpoint) -> TokenizerConfig``: the architecture, read off the tensor shapes (and config);
- ``load(checkpoint, config) -> Tokenizer``: the model with the checkpoint's weights, in eval mode on the CPU,
  reproducing the project's own encode -> indices -> decode;
- optionally ``describe(checkpoint) -> str``: a line naming the variant found, shown instead of ``DESCRIPTION``.

``load_checkpoint(path, format=None)`` detects the family (or takes ``format``) and loads; ``inspect_checkpoint``
says what was detected and inferred without building the model. Nothing is downloaded and nothing in a file is
ever run: files are read by ``reading.read_checkpoint``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import TokenizerConfig
from .reading import Checkpoint, read_checkpoint

# Detection order: the first family whose detect() accepts a checkpoint wins, so narrower layouts come first.
FAMILY_MODULES = ("cosmos", "magvit2", "taming", "llamagen", "diffusers")


def families() -> dict[str, ModuleType]:
    """``NAME -> module`` of every known family, in detection order."""
    modules = [importlib.import_module(f".{name}", __name__) for name in FAMILY_MODULES]
    return {module.NAME: module for module in modules}


def detect_family(checkpoint: Checkpoint) -> ModuleType:
    """The family module that recognises ``checkpoint``; ``ValueError`` naming the file when none does."""
    for module in families().values():
        if module.detect(checkpoint):
            return module
    names = sorted(checkpoint.keys())
    raise ValueError(
        f"{str(checkpoint.source)!r} is not a checkpoint of a known family ({', '.join(families())}); "
        f"its first tensors: {names[:8]}. Pass format= (--format) to force one"
    )


def _family(checkpoint: Checkpoint, format: str | None) -> ModuleType:
    if format is None:
        return detect_family(checkpoint)
    known = families()
    if format not in known:
        raise ValueError(f"format must be one of {sorted(known)}, got {format!r}")
    return known[format]


@dataclass(frozen=True)
class Inspection:
    """What ``inspect_checkpoint`` found: the family, the inferred config and counts."""

    source: Path
    family: str
    description: str
    config: TokenizerConfig
    tensors: int
    state_dicts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        from .. import config_to_dict

        return {
            "source": str(self.source),
            "family": self.family,
            "description": self.description,
            "state_dicts": list(self.state_dicts),
            "tensors": self.tensors,
            "codebook_size": _codebook_size(self.config),
            "downsample_factor": self.config.downsample_factor,
            "config": config_to_dict(self.config),
        }


def _codebook_size(config: TokenizerConfig) -> int:
    from ...quantizers import build_quantizer

    return build_quantizer(config.quantizer).codebook_size


def inspect_checkpoint(path: str | os.PathLike[str], *, format: str | None = None) -> Inspection:
    """Detect the family of a checkpoint file or folder and infer its config, without building the model."""
    checkpoint = read_checkpoint(path)
    module = _family(checkpoint, format)
    return Inspection(
        source=checkpoint.source,
        family=module.NAME,
        description=module.describe(checkpoint) if hasattr(module, "describe") else module.DESCRIPTION,
        config=module.infer_config(checkpoint),
        tensors=sum(len(sd) for sd in checkpoint.state_dicts.values()),
        state_dicts=tuple(checkpoint.state_dicts),
    )


def load_checkpoint(path: str | os.PathLike[str], *, format: str | None = None):
    """A ``Tokenizer`` (eval mode, CPU) from another project's checkpoint file or folder.

    ``format``: a family name (``families()``) to skip detection. Raises ``FileNotFoundError`` for a missing
    path and ``ValueError`` (naming the file) for a layout no family recognises or a config that does not fit.
    """
    checkpoint = read_checkpoint(path)
    module = _family(checkpoint, format)
    return module.load(checkpoint, module.infer_config(checkpoint))


__all__ = [
    "FAMILY_MODULES",
    "Checkpoint",
    "Inspection",
    "detect_family",
    "families",
    "inspect_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
]
