"""Evaluation during training: how well a tokenizer reconstructs held-out images and video clips.

``load_eval_images`` and ``load_eval_clips`` read fixed pixels (shorter side resized to ``size``, centred
``size`` square, no flip; for a video its first clip). ``evaluate_tokenizer`` reconstructs them and measures PSNR
and SSIM (and LPIPS when given) per image, and per frame for clips (``video_*``), plus code usage and perplexity
over all tokens. ``write_image_grid`` and ``write_side_by_side`` (tokenizer.data.video_write) show the results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from . import metrics
from ._atomic import atomic_target
from .data import CropPolicy, ImageReadError, load_sample, to_uint8
from .data.video import ClipSpec, VideoReadError, probe_video, read_clip

log = logging.getLogger(__name__)


def load_eval_images(paths: Sequence[Path], size: int) -> torch.Tensor | None:
    """The readable images of ``paths`` as fp32 ``[N, 3, size, size]`` in ``[-1, 1]``; None when there is none.

    Each is resized (shorter side to ``size``) and centre-cropped; an unreadable one is skipped with a warning.
    """
    policy = CropPolicy(size, random_crop=False, flip=False, max_zoom=1.0)
    pixels = []
    for path in paths:
        try:
            pixels.append(load_sample(path, policy, seed=0))
        except ImageReadError as err:
            log.warning("skipping unreadable eval image: %s", err)
    return torch.stack(pixels) if pixels else None


def load_eval_clips(paths: Sequence[Path], size: int, clip: ClipSpec) -> tuple[torch.Tensor | None, float]:
    """The clip ``clip`` of each readable video of ``paths``, fp32 ``[N, 3, clip.frames, size, size]`` in
    ``[-1, 1]`` (resized and centre-cropped as images), and the first clip's frame rate; ``(None, 0.0)`` when no
    video gives one. A video that cannot be read or is too short is skipped with a warning."""
    clips: list[torch.Tensor] = []
    fps = 0.0
    for path in paths:
        try:
            rate = probe_video(path).fps / clip.stride
            clips.append(read_clip(path, clip, size=size, resize=size, crop="center"))
        except VideoReadError as err:
            log.warning("skipping unreadable eval video: %s", err)
            continue
        fps = fps or rate
    return (torch.stack(clips) if clips else None), fps


@dataclass
class Evaluation:
    metrics: dict[str, float]  # psnr, ssim, lpips (images); video_psnr, ...; code_usage, perplexity
    images: tuple[torch.Tensor, torch.Tensor] | None  # (originals, reconstructions) [N, 3, H, W] in [-1, 1]
    clips: tuple[torch.Tensor, torch.Tensor] | None  # (originals, reconstructions) [N, 3, T, H, W] in [-1, 1]


@torch.no_grad()
def evaluate_tokenizer(
    model: nn.Module,
    images: torch.Tensor | None,
    clips: torch.Tensor | None,
    batch_size: int,
    perceptual: nn.Module | None = None,
) -> Evaluation:
    """Reconstruct ``images`` ``[N, 3, H, W]`` and ``clips`` ``[N, 3, T, H, W]`` (either may be None; pixels in
    ``[-1, 1]``) with ``model`` in chunks of ``batch_size``, on the model's device, as it is (train or eval mode).

    Metrics are means over images (``psnr``, ``ssim``, ``lpips`` when ``perceptual`` is given) and over all
    frames of all clips (``video_psnr``, ``video_ssim``, ``video_lpips``); ``code_usage`` (share of the codebook
    used) and ``perplexity`` count the tokens of both. Reconstructions are clamped to ``[-1, 1]``.
    """
    device = next(model.parameters()).device
    results: dict[str, float] = {}
    codes: list[torch.Tensor] = []
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for prefix, real in (("", images), ("video_", clips)):
        if real is None or len(real) == 0:
            continue
        real = real.to(device)
        fakes = []
        for chunk in real.split(batch_size):
            fake, quantized = model(chunk)
            fakes.append(fake.float().clamp(-1, 1))
            codes.append(quantized.indices.flatten())
        fake = torch.cat(fakes)
        pairs[prefix] = (real, fake)
        frames_real, frames_fake = _frames(real), _frames(fake)
        results[f"{prefix}psnr"] = metrics.psnr(frames_real, frames_fake).mean().item()
        results[f"{prefix}ssim"] = metrics.ssim(frames_real, frames_fake).mean().item()
        if perceptual is not None:
            results[f"{prefix}lpips"] = perceptual(frames_real, frames_fake).mean().item()
    if codes:
        used = torch.cat(codes)
        used = used[used >= 0]
        counts = torch.bincount(used, minlength=model.codebook_size).float()
        p = counts / counts.sum().clamp_min(1)
        results["code_usage"] = (counts > 0).float().mean().item()
        results["perplexity"] = torch.exp(-(p * p.clamp_min(1e-12).log()).sum()).item()
    return Evaluation(results, pairs.get(""), pairs.get("video_"))


def _frames(pixels: torch.Tensor) -> torch.Tensor:
    """``[N, 3, T, H, W]`` -> ``[N * T, 3, H, W]`` (frames folded into the batch); images pass through."""
    return pixels.transpose(1, 2).flatten(0, 1) if pixels.ndim == 5 else pixels


def write_image_grid(path: Path, real: torch.Tensor, fake: torch.Tensor) -> Path:
    """Originals ``[N, 3, H, W]`` in a row above their reconstructions, as a PNG written atomically."""
    rows = [torch.cat(list(batch), dim=2) for batch in (real, fake)]
    grid = to_uint8(torch.cat(rows, dim=1))
    with atomic_target(path) as temporary:
        Image.fromarray(grid).save(temporary, format="PNG")
    return path
