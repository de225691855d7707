"""Video tokenizer: encoding throughput on 17x256x256 clips, and peak memory on long videos in windows.

- Throughput: a causal f8/t4 tokenizer (ch 64, ch_mult 1,2,2,4, FSQ 2^14) encodes [B, 3, 17, 256, 256] clips.
- Long videos: a small causal model streams synthetic 32x32 frames, window by window (32 frames), for 1 and
  10 minutes of 24 fps video; peak memory must not grow with the length. One pass over the 1-minute video is
  measured beside it for contrast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from conftest import run

from tests._models import small_video_model
from tokenizer.models import VideoTokenizer, VideoTokenizerConfig
from tokenizer.quantizers import FSQConfig

CLIP = (17, 256, 256)
FPS = 24
LONG_SIZE = 32
WINDOW = 32


def throughput_model() -> VideoTokenizer:
    torch.manual_seed(0)
    config = VideoTokenizerConfig(
        ch=64, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(), z_channels=16, temporal_factor=4,
        quantizer=FSQConfig(codebook_size=2**14, dim=16),
    )  # fmt: skip
    return VideoTokenizer(config).eval()


def long_video_model() -> VideoTokenizer:
    """The small causal model the video pipeline tests run (tests/_models.py)."""
    return small_video_model()


def clip_batch(device: torch.device) -> int:
    return 4 if device.type == "cuda" else 1


def encode_clips(device: torch.device) -> Callable[[], torch.Tensor]:
    model = throughput_model().to(device)
    clips = torch.rand(clip_batch(device), 3, *CLIP, device=device) * 2 - 1
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def call() -> torch.Tensor:
        with autocast, torch.no_grad():
            return model.encode(clips)

    return call


def synthetic_windows(frames: int, device: torch.device) -> Iterator[torch.Tensor]:
    """A moving gradient, generated window by window (nothing but the current window is ever in memory)."""
    done = 0
    ramp = torch.linspace(-1, 1, LONG_SIZE, device=device)
    while done < frames:
        length = 1 + WINDOW if done == 0 else min(WINDOW, frames - done)
        t = torch.arange(done, done + length, device=device, dtype=torch.float32)[:, None, None]
        wave = torch.sin(ramp[None, None, :] * 3 + t * 0.05) * torch.cos(ramp[None, :, None] * 2 - t * 0.03)
        yield wave.expand(length, LONG_SIZE, LONG_SIZE)[None, None].expand(1, 3, -1, -1, -1).contiguous()
        done += length


def stream_long_video(minutes: float, device: torch.device) -> Callable[[], int]:
    model = long_video_model().to(device)
    frames = 1 + (int(minutes * 60 * FPS) - 1) // WINDOW * WINDOW

    def call() -> int:
        return sum(tokens.shape[1] for tokens in model.encode_windows(synthetic_windows(frames, device)))

    return call


def one_pass(minutes: float, device: torch.device) -> Callable[[], int]:
    model = long_video_model().to(device)
    frames = 1 + (int(minutes * 60 * FPS) - 1) // 4 * 4

    def call() -> int:
        video = torch.cat(list(synthetic_windows(frames, device)), dim=2)
        with torch.no_grad():
            return model.encode(video).shape[1]

    return call


@pytest.mark.parametrize("what", ["encode 17x256x256"])
def test_clip_throughput(benchmark, device, what):
    run(benchmark, encode_clips(device), device, rounds=2 if device.type == "cpu" else 10, clips=clip_batch(device))
    benchmark.extra_info["clips_per_s"] = clip_batch(device) / benchmark.stats.stats.min


@pytest.mark.parametrize("minutes", [1.0, 10.0])
def test_long_video_in_windows(benchmark, device, minutes):
    frames = 1 + (int(minutes * 60 * FPS) - 1) // WINDOW * WINDOW
    token_frames = run(benchmark, stream_long_video(minutes, device), device, rounds=1, frames=frames)
    assert token_frames == 1 + (frames - 1) // 4
    assert math.isfinite(benchmark.stats.stats.min)
