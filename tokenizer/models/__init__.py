"""Tokenizer models: the 2-D VQGAN image tokenizer and the causal 3-D video tokenizer, with their configs.

``load_tokenizer(path)`` loads either from a ``save_pretrained`` folder (its ``config.json`` says which), or a
checkpoint of another project (``formats``);
``config_from_dict`` / ``config_to_dict`` read and write either config with a ``"model"`` tag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import TokenizerConfig
from .magvit2 import Magvit2Config, Magvit2Tokenizer
from .tokenizer import FORMAT, SHIPPED_MODELS, Tokenizer, read_config_json, resolve_pretrained, shipped_model_dir
from .video import VideoTokenizer, VideoTokenizerConfig

MODEL_CLASSES: dict[str, type[Tokenizer]] = {"image": Tokenizer, "video": VideoTokenizer, "magvit2": Magvit2Tokenizer}


def model_class(config: TokenizerConfig) -> type[Tokenizer]:
    """The model a config builds."""
    return next(cls for cls in MODEL_CLASSES.values() if type(config) is cls.config_class)


def build_tokenizer(config: TokenizerConfig) -> Tokenizer:
    return model_class(config)(config)


def config_to_dict(config: TokenizerConfig) -> dict[str, Any]:
    """``config.to_dict()`` with its ``"model"`` tag ("image" or "video")."""
    return {"model": model_class(config).model_kind, **config.to_dict()}


def config_from_dict(data: dict[str, Any]) -> TokenizerConfig:
    """Inverse of ``config_to_dict``; without a ``"model"`` key the config is an image tokenizer's."""
    data = dict(data)
    kind = data.pop("model", "image")
    if kind not in MODEL_CLASSES:
        raise ValueError(f"model must be one of {sorted(MODEL_CLASSES)}, got {kind!r}")
    return MODEL_CLASSES[kind].config_class.from_dict(data)


OWN_FORMAT = "tessera"  # the format= name of a save_pretrained folder or a shipped model


def is_saved_tokenizer(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``save_pretrained`` (its config.json carries our format tag)."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        return False
    try:
        data = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def load_tokenizer(name_or_path: str | os.PathLike[str], *, format: str | None = None) -> Tokenizer:
    """Load a tokenizer, in eval mode on the CPU, from any of:

    - a folder written by ``save_pretrained`` (image or video; its ``config.json`` says which), or the name of
      a shipped model (``"default"``, ``"default-video"``);
    - a checkpoint of another project, file or folder, its family detected from the tensor names
      (``tokenizer.models.formats``: taming/LDM, LlamaGen, diffusers ``VQModel``, Cosmos DI, Open-MAGVIT2).

    ``format`` forces the reading: ``"tessera"`` for our own folders, or a family name
    (``tokenizer.models.formats.families()``). Files are never unpickled beyond tensors.
    """
    if format is None:
        own = str(name_or_path) in SHIPPED_MODELS or is_saved_tokenizer(name_or_path)
        if not own and not Path(name_or_path).exists():
            raise FileNotFoundError(
                f"no tokenizer at {str(name_or_path)!r}: neither a file or folder nor a shipped name "
                f"({', '.join(SHIPPED_MODELS)})"
            )
        format = OWN_FORMAT if own else None
    if format != OWN_FORMAT:
        from .formats import load_checkpoint

        return load_checkpoint(name_or_path, format=format)
    config_path = resolve_pretrained(name_or_path) / "config.json"
    kind = "image"
    if config_path.is_file():
        kind = read_config_json(config_path).get("model", "image")
    if kind not in MODEL_CLASSES:
        raise ValueError(f"{config_path}: unknown model kind {kind!r}")
    return MODEL_CLASSES[kind].from_pretrained(name_or_path)


__all__ = [
    "MODEL_CLASSES",
    "OWN_FORMAT",
    "SHIPPED_MODELS",
    "Magvit2Config",
    "Magvit2Tokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "VideoTokenizer",
    "VideoTokenizerConfig",
    "build_tokenizer",
    "config_from_dict",
    "config_to_dict",
    "is_saved_tokenizer",
    "load_tokenizer",
    "model_class",
    "resolve_pretrained",
    "shipped_model_dir",
]
