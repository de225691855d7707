"""Peak memory of one large image through the shipped default tokenizer: encode, then decode its tokens.

The default model (f8, middle-block attention over ``(S/8)^2`` positions) would need a ``(S/8)^4 * 4``-byte
score matrix at ``S x S`` pixels without query blocks (256 GiB at 4096x4096); with them (see
``tokenizer/models/attention.py``) memory follows the activations, linear in the pixel count. Peak memory is
``_measure.peak_memory_bytes`` (CPU: growth of the process RSS high-water mark, an upper bound).

``pytest benchmarks/bench_large_images.py`` times 512x512 (and 2048x2048 with ``BENCH_FULL=1``);
``python benchmarks/bench_large_images.py --size 2048 --size 4096`` prints the figures for RESULTS.md
(4096x4096 takes tens of minutes on two CPU cores: attention over 262,144 positions).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _measure import bench_device, machine_lines, peak_memory_bytes

from tokenizer import load_tokenizer

GIB = float(1 << 30)


@dataclass
class LargeImageFigures:
    size: int  # the image is size x size pixels
    encode_seconds: float
    encode_peak_bytes: int | None
    decode_seconds: float
    decode_peak_bytes: int | None

    def line(self) -> str:
        def gib(value: int | None) -> str:
            return "n/a" if value is None else f"{value / GIB:.2f} GiB"

        megapixels = self.size**2 / 1e6
        return (
            f"{self.size}x{self.size} ({megapixels:.1f} MP): encode peak {gib(self.encode_peak_bytes)} in "
            f"{self.encode_seconds:.0f} s; decode peak {gib(self.decode_peak_bytes)} in {self.decode_seconds:.0f} s"
        )


def measure_large_image(size: int, device: torch.device | None = None) -> LargeImageFigures:
    """Encode one random ``size`` x ``size`` image with the shipped ``default`` model and decode its tokens,
    once each, under ``torch.no_grad``; the peak memory each call adds and its seconds."""
    device = bench_device() if device is None else device
    model = load_tokenizer("default").to(device).eval()
    pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).mul_(2).sub_(1).to(device)

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return model.encode(pixels)

    def decode() -> torch.Tensor:
        with torch.no_grad():
            return model.decode(ids)

    start = time.perf_counter()
    ids, encode_peak = peak_memory_bytes(encode, device)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reconstruction, decode_peak = peak_memory_bytes(decode, device)
    decode_seconds = time.perf_counter() - start
    assert reconstruction.shape == pixels.shape, (reconstruction.shape, pixels.shape)
    return LargeImageFigures(size, encode_seconds, encode_peak, decode_seconds, decode_peak)


@pytest.mark.parametrize("size", [512, 2048] if os.environ.get("BENCH_FULL") == "1" else [512])
def test_large_image_peak_memory(benchmark, size):
    figures = benchmark.pedantic(lambda: measure_large_image(size), rounds=1, iterations=1)
    benchmark.extra_info.update(
        size=size,
        encode_peak_mib=None if figures.encode_peak_bytes is None else round(figures.encode_peak_bytes / 2**20, 1),
        decode_peak_mib=None if figures.decode_peak_bytes is None else round(figures.decode_peak_bytes / 2**20, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="image side in pixels (repeatable; default 2048)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = bench_device()
    for line in machine_lines(device):
        print(line, flush=True)
    for size in args.size or [2048]:
        print(measure_large_image(size, device).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
