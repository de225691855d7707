"""Small models that tests and benchmarks share: benchmarks/bench_video.py measures the memory of the very model
the video pipeline tests run, so the two are defined once, here."""

from __future__ import annotations

import torch

from tokenizer.models import VideoTokenizer, VideoTokenizerConfig
from tokenizer.quantizers import FSQConfig


def small_video_model(seed: int = 0) -> VideoTokenizer:
    """A causal video tokenizer, 4x spatial and 4x temporal (ch 32, ch_mult 1,2,2, no attention; FSQ 8,5,5,5:
    1000 codes), 2.8 M parameters: fast on a CPU. Seeded weights, in eval mode."""
    torch.manual_seed(seed)
    config = VideoTokenizerConfig(
        ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8, temporal_factor=4,
        quantizer=FSQConfig(levels=(8, 5, 5, 5), dim=8),
    )  # fmt: skip
    return VideoTokenizer(config).eval()
