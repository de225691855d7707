"""Image tokenizer throughput at 256x256: encode (our kernels vs the reference quantization) and decode.

Two taming-sized configs: f16 (ch 128, ch_mult 1,1,2,2,4, 16384 codes of dim 256) and f8 (ch 128,
ch_mult 1,2,2,4, 16384 codes of dim 4). Images per second = batch / seconds per call. "reference" swaps
``kernels.nearest_code`` for ``kernels.reference.nearest_code`` (the full distance matrix), so the
difference is what the fused kernel saves inside a whole encoder pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from conftest import run

import kernels
from kernels import reference
from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.quantizers import VQConfig

CONFIGS = {
    "f16": TokenizerConfig(),
    "f8": TokenizerConfig(
        ch_mult=(1, 2, 2, 4), attn_resolutions=(32,), z_channels=4, quantizer=VQConfig(codebook_size=16384, dim=4)
    ),
}
SIZE = 256


def batch_size(device: torch.device) -> int:
    return 16 if device.type == "cuda" else 1


@contextlib.contextmanager
def quantizer_path(path: str) -> Iterator[None]:
    """``ours``: the fused nearest_code; ``reference``: the N x K distance matrix + argmin."""
    fused = kernels.nearest_code
    if path == "reference":
        kernels.nearest_code = reference.nearest_code
    try:
        yield
    finally:
        kernels.nearest_code = fused


def tokenizer_calls(name: str, device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    """``encode`` under both quantization paths and ``decode`` for config ``name``, on one batch."""
    torch.manual_seed(0)
    model = Tokenizer(CONFIGS[name]).to(device).eval()
    pixels = torch.rand(batch_size(device), 3, SIZE, SIZE, device=device) * 2 - 1
    ids = model.encode(pixels)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def encode(path: str) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with quantizer_path(path), autocast, torch.no_grad():
                return model.encode(pixels)

        return call

    def decode() -> torch.Tensor:
        with autocast, torch.no_grad():
            return model.decode(ids)

    return {"encode ours": encode("ours"), "encode reference": encode("reference"), "decode": decode}


@pytest.mark.parametrize("call", ["encode ours", "encode reference", "decode"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_tokenizer_throughput(benchmark, device, name, call):
    fn = tokenizer_calls(name, device)[call]
    run(benchmark, fn, device, rounds=2 if device.type == "cpu" else 10, config=name, images=batch_size(device))
    benchmark.extra_info["images_per_s"] = batch_size(device) / benchmark.stats.stats.min
