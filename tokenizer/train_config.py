"""The trainer's configuration: one frozen dataclass per concern, read from YAML or JSON.

A config file holds the sections ``model`` (TokenizerConfig), ``loss`` (VQGANLossConfig), ``data``,
``optim`` and the run-level keys of ``TrainConfig``; unknown keys are errors that name them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .losses import VQGANLossConfig
from .losses.discriminator import min_input_size
from .models import MODEL_CLASSES, TokenizerConfig, VideoTokenizerConfig, config_from_dict, config_to_dict


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ()  # folders of images and videos (searched recursively) or files
    eval: tuple[str, ...] = ()  # held-out images and videos for evaluation; empty: the first eval_images of train
    size: int = 256  # training crops are size x size; a multiple of the model's downsampling factor
    random_crop: bool = True
    flip: bool = True
    max_zoom: float = 1.25  # shorter side resized to size * U(1, max_zoom) before cropping
    # Share of samples (images, or whole clips) whose hues turn by a random angle with a random saturation gain,
    # luma kept up to clamping (tokenizer.data.colour): teaches colours a small training set lacks.
    chroma_jitter: float = 0.0
    workers: int = 0  # DataLoader worker processes decoding images and videos
    # Video models only. Frames per training clip: 1 + k * the model's temporal_factor (17 = 1 + 4 * 4 gives
    # five token frames at the usual factor 4); evaluation reads the first clip of each eval video.
    clip_frames: int = 17
    clip_stride: int = 1  # take every clip_stride-th frame inside a clip (2: a clip spans twice the time)
    # Share of micro-batches made of images when data.train holds images and videos (each micro-batch is one
    # kind); None: the share of image files among all files.
    image_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("train", "eval"):
            value = getattr(self, name)
            paths = [value] if isinstance(value, (str, os.PathLike)) else value  # one folder given as a string
            object.__setattr__(self, name, tuple(str(p) for p in paths))
        if self.size < 1:
            raise ValueError(f"data.size must be a positive number of pixels, got {self.size}")
        if self.max_zoom < 1.0:
            raise ValueError(f"data.max_zoom must be >= 1, got {self.max_zoom}")
        if type(self.chroma_jitter) not in (int, float) or not 0.0 <= self.chroma_jitter <= 1.0:
            raise ValueError(f"data.chroma_jitter must lie in [0, 1], got {self.chroma_jitter!r}")
        if self.workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {self.workers}")
        for name in ("clip_frames", "clip_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        fraction = self.image_fraction
        if fraction is not None and (type(fraction) not in (int, float) or not 0.0 <= fraction <= 1.0):
            raise ValueError(f"data.image_fraction must lie in [0, 1] or be null, got {fraction!r}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # peak learning rate of the tokenizer (AdamW)
    disc_lr: float | None = None  # discriminator learning rate; None: lr
    betas: tuple[float, float] = (0.5, 0.9)  # the VQGAN recipe's betas: a low beta1 steadies GAN training
    weight_decay: float = 1e-4
    warmup_steps: int = 1000  # linear warm-up from 0, then cosine decay to min_lr_ratio * lr at the last step
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str  # checkpoints, logs and evaluation images go here
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: VQGANLossConfig = field(default_factory=VQGANLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 100_000  # optimizer steps in the whole run (the schedule's length)
    batch_size: int = 8  # images or clips per process and micro-step
    grad_accumulation: int = 1  # micro-steps per optimizer step
    seed: int = 0  # fixes initialisation, data order, augmentation and dropout
    ema_decay: float = 0.0  # EMA of the weights for evaluation and export; 0 disables it
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    log_every: int = 10
    eval_every: int = 1000
    eval_images: int = 8
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # the newest k checkpoints are kept

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accumulation", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {self.mixed_precision!r}")
        if self.data.size % self.model.downsample_factor:
            raise ValueError(
                f"data.size={self.data.size} must be a multiple of the model's downsampling factor "
                f"{self.model.downsample_factor}"
            )
        if isinstance(self.model, VideoTokenizerConfig) and (self.data.clip_frames - 1) % self.model.temporal_factor:
            factor = self.model.temporal_factor
            raise ValueError(
                f"data.clip_frames={self.data.clip_frames} must be 1 + k * the model's temporal_factor {factor} "
                f"({1 + factor}, {1 + 2 * factor}, {1 + 4 * factor}, ...)"
            )
        self._check_discriminator_inputs()

    def _check_discriminator_inputs(self) -> None:
        """Crops and clips must be large enough for the patch discriminators (found now, not at disc_start)."""
        if self.loss.disc_weight == 0 or self.loss.disc_start >= self.steps:
            return
        layers = self.loss.disc_layers
        if self.data.size < min_input_size(layers):
            raise ValueError(
                f"data.size={self.data.size} is too small for the discriminator: loss.disc_layers={layers} "
                f"needs crops of at least {min_input_size(layers)} pixels"
            )
        frames = min_input_size(layers, stride=1)
        if isinstance(self.model, VideoTokenizerConfig) and self.loss.disc_dims == 3 and self.data.clip_frames < frames:
            raise ValueError(
                f"data.clip_frames={self.data.clip_frames} is too short for the 3-D discriminator: "
                f"loss.disc_layers={layers} needs clips of at least {frames} frames"
            )

    def to_dict(self) -> dict[str, Any]:
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        flat["model"] = config_to_dict(self.model)
        flat["loss"] = self.loss.to_dict()
        flat["data"] = dataclasses.asdict(self.data)
        flat["optim"] = dataclasses.asdict(self.optim)
        return flat

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        _reject_unknown("config", raw, cls)
        if "model" in raw:
            raw["model"] = _model_section(raw["model"])
        if "loss" in raw:
            raw["loss"] = VQGANLossConfig.from_dict(raw["loss"])
        for name, section in (("data", DataConfig), ("optim", OptimConfig)):
            if name in raw:
                _reject_unknown(name, raw[name], section)
                raw[name] = section(**raw[name])
        if "out_dir" not in raw:
            raise ValueError("config is missing out_dir (where checkpoints and logs go)")
        return cls(**raw)


def _model_section(raw: Any) -> TokenizerConfig:
    """The ``model`` section. The model configs name their own fields (``ch_mult``); here errors say the section."""
    if not isinstance(raw, dict):
        raise TypeError(f"model must be a mapping, got {type(raw).__name__}")
    kind = raw.get("model", "image")
    if kind in MODEL_CLASSES:
        _reject_unknown("model", {k: v for k, v in raw.items() if k != "model"}, MODEL_CLASSES[kind].config_class)
    try:
        return config_from_dict(raw)
    except (TypeError, ValueError) as error:
        raise (TypeError if isinstance(error, TypeError) else ValueError)(f"model: {error}") from error


def _reject_unknown(where: str, raw: dict[str, Any], cls: type) -> None:
    if not isinstance(raw, dict):
        raise TypeError(f"{where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown keys in {where}: {unknown}")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a ``.yaml``/``.yml``/``.json`` training config.

    ``overrides`` replace top-level keys (a section whole), or with a dotted key one key of a section:
    ``{"data.train": ["photos/"]}`` keeps the rest of ``data``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        raw = json.loads(text)
    else:
        raise ValueError(f"training config {str(path)!r}: expected a .yaml, .yml or .json file")
    if not isinstance(raw, dict):
        raise TypeError(f"training config {str(path)!r} must hold a mapping at the top level")
    for key, value in (overrides or {}).items():
        section, dot, name = key.partition(".")
        if not dot:
            raw[key] = value
        elif isinstance(raw.setdefault(section, {}), dict):
            raw[section][name] = value
        else:
            raise TypeError(f"training config {str(path)!r}: {section} must be a mapping to override {key}")
    return TrainConfig.from_dict(raw)
