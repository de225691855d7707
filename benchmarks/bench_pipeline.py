"""Dataset tokenization: items/s of ``encode_dataset`` on 1,000 256x256 images, and its overhead over the bare
model on the same batches.

    python benchmarks/bench_pipeline.py [--images 1000] [--workers 1] [--batch-size 16]

The bare figure is ``model.encode`` on the already decoded, preprocessed tensors in the pipeline's batches;
the pipeline figure includes finding the files, decoding (in ``--workers`` processes), batching, hashing,
writing shards and the manifest. Overhead = pipeline seconds / bare seconds - 1 (target: at most 10%).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _measure import machine_lines

from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.sources import collect_inputs
from tokenizer.pipeline import EncodeOptions, encode_dataset
from tokenizer.quantizers import FSQConfig


def small_model() -> Tokenizer:
    """A small f8 tokenizer (ch 32, ch_mult 1,2,2,4, FSQ 2^14): the kind a dataset job would run on a CPU."""
    torch.manual_seed(0)
    config = TokenizerConfig(
        ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(), z_channels=16,
        quantizer=FSQConfig(codebook_size=2**14, dim=16),
    )  # fmt: skip
    return Tokenizer(config).eval()


def write_images(folder: Path, count: int, size: int = 256) -> None:
    """``count`` distinct JPEG photos-like images (smooth gradients plus noise), ``size`` x ``size``."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)
    for i in range(count):
        base = np.stack([np.outer(ramp, ramp), np.outer(1 - ramp, ramp), np.outer(ramp, 1 - ramp)], axis=-1)
        pixels = (255 * (0.7 * np.roll(base, i, axis=0) + 0.3 * rng.random((size, size, 3)))).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def bare_seconds(model: Tokenizer, paths: list[Path], batch_size: int) -> float:
    """``model.encode`` alone over the decoded images, in the same batches as the pipeline."""
    preprocess = ImagePreprocess(size=256, factor=model.downsample_factor)
    pixels = torch.stack([load_for_tokenization(p, preprocess).pixels for p in paths])
    started = time.perf_counter()
    for batch in pixels.split(batch_size):
        model.encode(batch)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    print("\n".join(machine_lines(torch.device("cpu"))) + "\n")
    model = small_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, args.images)
        paths = collect_inputs([folder])
        model.encode(torch.zeros(1, 3, 256, 256))  # warm-up
        options = EncodeOptions(
            preprocess=ImagePreprocess(size=256, factor=model.downsample_factor),
            batch_size=args.batch_size,
            workers=args.workers,
            progress=False,
        )
        started = time.perf_counter()
        summary = encode_dataset(paths, model, Path(tmp) / "tokens", options)
        pipeline = time.perf_counter() - started
        bare = bare_seconds(model, paths, args.batch_size)
    print(f"images            {summary.items} (256x256 JPEG), batch {args.batch_size}, workers {args.workers}")
    print(f"pipeline          {pipeline:.1f} s  ({summary.items / pipeline:.2f} items/s)")
    print(f"bare model        {bare:.1f} s  ({summary.items / bare:.2f} items/s)")
    print(f"overhead          {100 * (pipeline / bare - 1):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
