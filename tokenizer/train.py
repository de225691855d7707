"""The VQ-GAN trainer: one process, or many under ``torchrun`` (DDP), resumable to the bit on CPU.

Each optimizer step runs ``grad_accumulation`` micro-batches through the tokenizer (reconstruction,
perceptual, quantizer and — from ``loss.disc_start`` on — adversarial terms), then, once the GAN is on,
a discriminator step on the same real and reconstructed images. Everything random is a function of
``(seed, step, rank)``: the data stream (tokenizer.data.stream), the augmentation and the dropout/RNG seed
set before every step. A resumed run therefore continues exactly where the checkpoint left off.

An image tokenizer trains on the images of ``data.train``. A video tokenizer trains on its images and its
videos: each micro-batch holds either images ``[B, 3, H, W]`` or clips ``[B, 3, T, H, W]``
(``tokenizer.data.stream.MediaStream``), and the losses take either.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ._distributed import barrier, default_device, init_from_environment, is_distributed
from .checkpoints import latest_checkpoint, write_checkpoint
from .data import CropPolicy, ImageStream, MediaStream, StepBatches, find_media
from .data.video import ClipSpec
from .data.video_write import write_side_by_side
from .evaluation import evaluate_tokenizer, load_eval_clips, load_eval_images, write_image_grid
from .losses import VQGANLoss
from .models import VideoTokenizer, build_tokenizer, load_tokenizer, model_class
from .train_config import TrainConfig

log = logging.getLogger(__name__)

# Config keys a resumed run may change: they do not alter what is computed, or (steps) extend the schedule.
_RESUMABLE_CHANGES = frozenset(
    {"out_dir", "steps", "log_every", "eval_every", "eval_images", "checkpoint_every", "keep_checkpoints"}
)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Trains ``Tokenizer(config.model)`` with ``VQGANLoss(config.loss)`` on ``config.data``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group (NCCL on CUDA, gloo on CPU), wraps
    the tokenizer in DDP and averages the discriminator's gradients and statistics, so every rank holds
    the same weights. Rank 0 writes logs, evaluation images and checkpoints.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        """``resume``: continue from the newest checkpoint in ``out_dir``. Without it, an ``out_dir`` that already
        holds a run (checkpoints or log.jsonl) is refused, unless ``overwrite`` deletes that run's files first.

        Everything a config can get wrong (data paths, LPIPS weight files, a changed config on resume) is checked
        before ``out_dir`` is touched: a failed start leaves no empty run folder and deletes nothing."""
        self.config = config
        self.train_images, self.train_videos = _find_media("data.train", config.data.train)
        if not (self.train_images or self.train_videos):
            raise ValueError(
                f"data.train: no images or videos in {list(config.data.train)}: {_SET_TRAIN_DATA}"
                if config.data.train
                else f"data.train is not set: {_SET_TRAIN_DATA}"
            )
        self.is_video = issubclass(model_class(config.model), VideoTokenizer)
        if self.train_videos and not self.is_video:
            raise ValueError(
                f"data.train holds {len(self.train_videos)} video file(s) (e.g. {str(self.train_videos[0])!r}) but "
                "the model is an image tokenizer: train a video model (model: video) or remove the videos"
            )
        if config.data.eval:
            eval_images, eval_videos = _find_media("data.eval", config.data.eval)
        else:
            eval_images, eval_videos = self.train_images, self.train_videos
        self.eval_images = eval_images[: config.eval_images]
        self.eval_videos = eval_videos[: config.eval_images] if self.is_video else []
        data = config.data
        self.policy = CropPolicy(data.size, data.random_crop, data.flip, data.max_zoom, data.chroma_jitter)
        self.clip = ClipSpec(frames=config.data.clip_frames, stride=config.data.clip_stride)

        self.world_size, self.rank, local_rank = init_from_environment()
        self.device = torch.device(device) if device is not None else default_device(local_rank)
        self.out_dir = Path(config.out_dir)

        torch.manual_seed(config.seed)
        self.model = build_tokenizer(config.model).to(self.device)
        self.loss = VQGANLoss(config.loss).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay > 0 else None
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
        )
        self.disc_params = [p for d in self.loss.discriminators() for p in d.parameters() if p.requires_grad]
        self.disc_optimizer = torch.optim.AdamW(
            self.disc_params, lr=optim.disc_lr or optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
        )
        self.step = 0
        if resume:
            self._load_latest()
        else:
            _claim_out_dir(self.out_dir, overwrite)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)

        self.train_model: torch.nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)

    # -- the loop -----------------------------------------------------------------------------------

    def train(self, until: int | None = None) -> dict[str, float]:
        """Train up to step ``until`` (default: ``config.steps``); returns the last step's logs."""
        config = self.config
        stop = min(until or config.steps, config.steps)
        batches = self._batches()
        logs: dict[str, float] = {}
        bar = tqdm(total=stop, initial=self.step, desc="train", unit="step", disable=self.rank != 0, dynamic_ncols=True)
        started, images = time.perf_counter(), 0
        while self.step < stop:
            logs = self._train_step(batches)
            self.step += 1
            images += config.batch_size * config.grad_accumulation * self.world_size
            bar.update(1)
            if self.step % config.log_every == 0 or self.step == stop:
                logs["images_per_s"] = images / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", rec=f"{logs.get('rec', float('nan')):.4f}")
                self._log({"kind": "train", "step": self.step, **logs})
                started, images = time.perf_counter(), 0
            if self.step % config.eval_every == 0 or self.step == config.steps:
                self.evaluate()
            if self.step % config.checkpoint_every == 0 or self.step == stop:
                self.save_checkpoint()
        bar.close()
        barrier()
        return logs

    def _batches(self) -> Iterator[torch.Tensor]:
        config = self.config
        if self.is_video:
            stream = MediaStream(
                self.train_images,
                self.train_videos,
                self.policy,
                config.seed,
                config.batch_size,
                self.clip,
                config.data.image_fraction,
            )
        else:
            stream = ImageStream(self.train_images, self.policy, config.seed)
        sampler = StepBatches(self.step, config.batch_size, config.grad_accumulation, self.world_size, self.rank)
        loader = DataLoader(
            stream,
            batch_sampler=sampler,
            num_workers=config.data.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=config.data.workers > 0,
        )
        return iter(loader)

    def _autocast(self) -> contextlib.AbstractContextManager:
        mode = self.config.mixed_precision
        enabled = mode == "bf16" or (mode == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _train_step(self, batches: Iterator[torch.Tensor]) -> dict[str, float]:
        config, step = self.config, self.step
        torch.manual_seed(config.seed * 1_000_003 + step * self.world_size + self.rank)
        self._set_lr(step)
        gan_on = step >= config.loss.disc_start
        accumulation = config.grad_accumulation

        self.model.train()
        _set_requires_grad(self.loss.discriminators(), False)
        self.optimizer.zero_grad(set_to_none=True)
        pairs, totals = [], {}
        for micro in range(accumulation):
            real = next(batches).to(self.device, non_blocking=True)
            sync = micro == accumulation - 1 or not isinstance(self.train_model, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.train_model.no_sync(), self._autocast():
                fake, quantized = self.train_model(real)
                loss, logs = self.loss.generator_loss(real, fake, quantized.loss, step, self.model.last_layer)
            (loss / accumulation).backward()
            pairs.append((real, fake.detach()))
            if self.is_video:
                logs["clip_share"] = float(real.ndim == 5)  # share of the step's micro-batches that were clips
            _accumulate(totals, {"loss": loss, **logs, **quantized.metrics}, accumulation)
        self._clip(self.model.parameters())
        self.optimizer.step()

        if gan_on:
            _set_requires_grad(self.loss.discriminators(), True)
            self.disc_optimizer.zero_grad(set_to_none=True)
            for real, fake in pairs:
                with self._autocast():
                    d_loss, d_logs = self.loss.discriminator_loss(real, fake, step)
                (d_loss / accumulation).backward()
                _accumulate(totals, {"d_loss": d_loss, **d_logs}, accumulation)
            _average_gradients(self.disc_params)
            self._clip(self.disc_params)
            self.disc_optimizer.step()
            _average_buffers([b for name, b in self.loss.named_buffers() if not _frozen(name)])

        if self.ema is not None:
            _update_ema(self.ema, self.model, self.config.ema_decay)
        return {name: float(value) for name, value in totals.items()}

    def _set_lr(self, step: int) -> None:
        optim = self.config.optim
        factor = lr_factor(step, optim.warmup_steps, self.config.steps, optim.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = optim.lr * factor
        for group in self.disc_optimizer.param_groups:
            group["lr"] = (optim.disc_lr or optim.lr) * factor

    def _clip(self, params: Any) -> None:
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(params), self.config.optim.grad_clip)

    # -- evaluation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Reconstruction metrics of the model (its EMA when kept) on the eval images and videos (rank 0 only).

        Images: PSNR, SSIM, LPIPS when the loss has it; videos (a video model's, the first clip of each):
        ``video_psnr``, ``video_ssim`` (means over frames), ``video_lpips``; code usage and perplexity over all
        tokens (tokenizer.evaluation). Writes an ``eval`` log record, ``OUT/samples/step-NNNNNNNN.png``
        (original images on top, reconstructions below) and ``OUT/samples/step-NNNNNNNN.mp4`` (the first eval
        video's clip: original | reconstruction).
        """
        if self.rank != 0 or not (self.eval_images or self.eval_videos):
            return {}
        model = self.ema if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        try:
            size, batch_size = self.config.data.size, self.config.batch_size
            images = load_eval_images(self.eval_images, size)
            clips, fps = load_eval_clips(self.eval_videos, size, self.clip)
            result = evaluate_tokenizer(model, images, clips, batch_size, self.loss.perceptual)
        finally:
            model.train(was_training)
        if not result.metrics:
            return {}
        self._log({"kind": "eval", "step": self.step, **result.metrics})
        folder = self.out_dir / "samples"
        folder.mkdir(exist_ok=True)
        if result.images is not None:
            write_image_grid(folder / f"step-{self.step:08d}.png", *result.images)
        if result.clips is not None:
            real, fake = result.clips
            write_side_by_side(folder / f"step-{self.step:08d}.mp4", real[0], fake[0], fps)
        return result.metrics

    # -- checkpoints --------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write ``OUT/checkpoints/step-NNNNNNNN`` atomically (rank 0) and keep the newest ``keep_checkpoints``."""
        if self.rank != 0:
            return None

        def write(folder: Path) -> None:
            self.model.save_pretrained(folder)
            if self.ema is not None:
                self.ema.save_pretrained(folder / "ema")
            save_file(_loss_state(self.loss), str(folder / "loss.safetensors"))
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "config": json.dumps(self.config.to_dict()),
            }
            torch.save(state, folder / "trainer.pt")

        return write_checkpoint(self.out_dir, self.step, write, self.config.keep_checkpoints)

    def _load_latest(self) -> None:
        found = latest_checkpoint(self.out_dir)
        if found is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0", self.out_dir)
            return
        step, folder = found
        state = torch.load(folder / "trainer.pt", map_location=self.device, weights_only=True)
        saved = _with_defaults(json.loads(state["config"]))
        current = json.loads(json.dumps(self.config.to_dict()))
        changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            raise ValueError(f"cannot resume from {folder}: the config changed in {changed}")
        self.model.load_state_dict(load_tokenizer(folder).state_dict())
        if self.ema is not None:
            self.ema.load_state_dict(load_tokenizer(folder / "ema").state_dict())
        _load_loss_state(self.loss, load_file(str(folder / "loss.safetensors"), device=str(self.device)), folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", folder, step)

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config as this version writes it: fields added since it was saved take their defaults."""
    try:
        return json.loads(json.dumps(TrainConfig.from_dict(saved).to_dict()))
    except (TypeError, ValueError):
        return saved  # the comparison then names what differs


def _set_requires_grad(modules: list[torch.nn.Module], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


def _frozen(name: str) -> bool:
    """Loss tensors that never train (the LPIPS network): not checkpointed, not synchronised."""
    return name.startswith("perceptual.")


def _loss_state(loss: VQGANLoss) -> dict[str, torch.Tensor]:
    """The trained state of the loss (discriminator, LeCam averages), without the frozen LPIPS weights."""
    return {k: v.contiguous() for k, v in loss.state_dict().items() if not _frozen(k)}


def _load_loss_state(loss: VQGANLoss, state: dict[str, torch.Tensor], folder: Path) -> None:
    result = loss.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not _frozen(k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{folder / 'loss.safetensors'} does not match the loss config: "
            f"missing {missing}, unexpected {result.unexpected_keys}"
        )


def _accumulate(totals: dict[str, Any], values: dict[str, Any], count: int) -> None:
    for name, value in values.items():
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        totals[name] = totals.get(name, 0.0) + value / count


def _average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the discriminator's gradients over ranks (it is called twice per step, so it is not DDP-wrapped)."""
    if not is_distributed():
        return
    # A parameter may have a gradient on some ranks only (the 3-D discriminator sees clips, and a rank's
    # micro-batches may all be images): there it counts as zero, so every rank reduces the same tensors.
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(present)
    for p, count in zip(params, present.tolist()):
        if count and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(chunk.view_as(g))


def _average_buffers(buffers: list[torch.Tensor]) -> None:
    """Average floating buffers (BatchNorm statistics, LeCam EMAs) over ranks so all ranks stay identical; integer
    ones (BatchNorm batch counters, which differ when only some ranks ran the 3-D discriminator) take the maximum."""
    if not is_distributed():
        return
    for buffer in buffers:
        if buffer.dtype.is_floating_point:
            dist.all_reduce(buffer)
            buffer /= dist.get_world_size()
        else:
            dist.all_reduce(buffer, op=dist.ReduceOp.MAX)


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


_SET_TRAIN_DATA = (
    "set data.train in the training config to your folders of images (and videos, for a video model), or pass "
    "--data PATH to `tokenizer train` (the example configs in tools/configs hold placeholder paths)"
)


def _find_media(key: str, sources: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """``find_media(sources)``; a source that matches nothing is an error naming the config key and its remedy."""
    try:
        return find_media(sources)
    except FileNotFoundError as error:
        remedy = _SET_TRAIN_DATA if key == "data.train" else f"set {key} to held-out images, or remove it"
        relative = any(not Path(s).is_absolute() for s in sources)
        where = f" (relative paths are read from {Path.cwd()})" if relative else ""
        raise FileNotFoundError(f"{key}: {error}{where}: {remedy}") from error


RUN_FILES = ("checkpoints", "log.jsonl", "samples")  # what a training run writes into out_dir


def _claim_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier one (its checkpoints would be overwritten and pruned, its log
    appended to), or with ``overwrite`` delete the earlier run's files (only those, nothing else in out_dir)."""
    existing = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if not existing:
        return
    if not overwrite:
        raise ValueError(
            f"{out_dir} already holds a training run ({', '.join(p.name for p in existing)}): pass --resume to "
            "continue it, --overwrite to delete it and start again, or choose another out_dir"
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
