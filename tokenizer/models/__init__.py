"""Tokenizer models: the 2-D VQGAN image tokenizer and the causal 3-D video tokenizer, with their configs.

``load_tokenizer(folder)`` loads either from a ``save_pretrained`` folder (its ``config.json`` says which);
``config_from_dict`` / ``config_to_dict`` read and write either config with a ``"model"`` tag.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .config import TokenizerConfig
from .tokenizer import SHIPPED_MODELS, Tokenizer, resolve_pretrained, shipped_model_dir
from .video import VideoTokenizer, VideoTokenizerConfig

MODEL_CLASSES: dict[str, type[Tokenizer]] = {"image": Tokenizer, "video": VideoTokenizer}


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


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> Tokenizer:
    """Load an image or video tokenizer saved by ``save_pretrained``, or a shipped one by name (``"default"``,
    ``"default-video"``), in eval mode on the CPU."""
    config_path = resolve_pretrained(name_or_path) / "config.json"
    kind = "image"
    if config_path.is_file():
        kind = json.loads(config_path.read_text()).get("model", "image")
    if kind not in MODEL_CLASSES:
        raise ValueError(f"{config_path}: unknown model kind {kind!r}")
    return MODEL_CLASSES[kind].from_pretrained(name_or_path)


__all__ = [
    "MODEL_CLASSES",
    "SHIPPED_MODELS",
    "Tokenizer",
    "TokenizerConfig",
    "VideoTokenizer",
    "VideoTokenizerConfig",
    "build_tokenizer",
    "config_from_dict",
    "config_to_dict",
    "load_tokenizer",
    "model_class",
    "resolve_pretrained",
    "shipped_model_dir",
]
