"""Streaming datasets: ``encode_dataset`` over the same images as loose files, WebDataset tars and one Parquet
file; items/s per rank and the overhead of streaming over the loose files.

    python benchmarks/bench_datasets.py [--images 2000] [--size 64] [--processes 1] [--workers 1]

The images (JPEG, photo-like, ``--size`` square) are written three ways: loose files, tar shards of
``--shard-size`` samples (``key.jpg`` + ``key.txt``) and a Parquet file with a Hugging Face ``Image`` column
and a caption column (row groups of 100 rows). Each set is tokenized by the small f8 model of
``bench_pipeline`` with the same options; with ``--processes 2`` by two ranks on gloo (each with
``cpu_count / processes`` threads), timed on rank 0 from the call to the end of the manifest. The best of
``--repeats`` runs counts. Overhead = seconds(format) / seconds(loose) - 1 (target: at most 10%).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _measure import machine_lines
from bench_pipeline import small_model

from tokenizer.data.containers import TableColumns
from tokenizer.data.preprocess import ImagePreprocess
from tokenizer.data.sources import collect_inputs
from tokenizer.pipeline import EncodeOptions, encode_dataset


def jpeg_images(count: int, size: int) -> list[bytes]:
    """``count`` distinct photo-like JPEGs (gradients plus noise), ``size`` x ``size``."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)
    base = np.stack([np.outer(ramp, ramp), np.outer(1 - ramp, ramp), np.outer(ramp, 1 - ramp)], axis=-1)
    images = []
    for i in range(count):
        pixels = (255 * (0.7 * np.roll(base, i, axis=0) + 0.3 * rng.random((size, size, 3)))).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def write_sets(root: Path, images: list[bytes], shard_size: int) -> dict[str, list[str]]:
    """The images as loose files, tar shards and a Parquet file; the input specs of each set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    loose = root / "loose"
    loose.mkdir()
    for i, data in enumerate(images):
        (loose / f"{i:06d}.jpg").write_bytes(data)
    tars = root / "tars"
    tars.mkdir()
    for s, start in enumerate(range(0, len(images), shard_size)):
        with tarfile.open(tars / f"{s:05d}.tar", "w") as tar:
            for i in range(start, min(start + shard_size, len(images))):
                for name, data in ((f"{i:06d}.jpg", images[i]), (f"{i:06d}.txt", f"image {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    table = pa.table({
        "image": [{"bytes": data, "path": f"{i:06d}.jpg"} for i, data in enumerate(images)],
        "caption": [f"image {i}" for i in range(len(images))],
    })  # fmt: skip
    metadata = {"huggingface": '{"info": {"features": {"image": {"_type": "Image"}}}}'}
    pq.write_table(table.replace_schema_metadata(metadata), root / "data.parquet", row_group_size=100)
    return {"loose": [str(loose)], "tar": [str(tars)], "parquet": [str(root / "data.parquet")]}


def options(args: argparse.Namespace, factor: int) -> EncodeOptions:
    return EncodeOptions(
        preprocess=ImagePreprocess(size=args.size, factor=factor),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=False,
        columns=TableColumns(keep=("caption",)),
    )


def timed_run(rank: int, world: int, init: str, specs: list[str], out: str, args: argparse.Namespace, box) -> None:
    """One rank's encode of ``specs`` into ``out``; rank 0 puts the seconds into ``box``."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        model = small_model()
        model.encode(torch.zeros(1, 3, args.size, args.size))  # warm-up
        inputs = collect_inputs(specs)
        if world > 1:
            dist.barrier()
        started = time.perf_counter()
        summary = encode_dataset(inputs, model, out, options(args, model.downsample_factor))
        seconds = time.perf_counter() - started
        if rank == 0:
            box.put((seconds, summary.errors))
    finally:
        if world > 1:
            dist.destroy_process_group()


def measure(specs: list[str], root: Path, name: str, args: argparse.Namespace) -> float:
    best = float("inf")
    for repeat in range(args.repeats):
        out = root / f"tokens-{name}-{repeat}"
        if args.processes == 1:
            box = mp.get_context("spawn").SimpleQueue()
            timed_run(0, 1, "", specs, str(out), args, box)
        else:
            box = mp.get_context("spawn").SimpleQueue()
            init = str(root / f"init-{name}-{repeat}")
            mp.spawn(timed_run, args=(args.processes, init, specs, str(out), args, box), nprocs=args.processes)
        seconds, errors = box.get()
        if errors:
            raise RuntimeError(f"{name}: {errors} errors; see {out / 'errors.jsonl'}")
        best = min(best, seconds)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--shard-size", type=int, default=500, help="samples per tar shard and per token shard")
    parser.add_argument("--processes", type=int, default=1, help="ranks (gloo) sharing the work")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    print("\n".join(machine_lines(torch.device("cpu"))) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = write_sets(root, jpeg_images(args.images, args.size), args.shard_size)
        seconds = {name: measure(specs, root, name, args) for name, specs in sets.items()}
    print(f"images      {args.images} ({args.size}x{args.size} JPEG), shards of {args.shard_size}, "
          f"batch {args.batch_size}, workers {args.workers}, processes {args.processes}")  # fmt: skip
    for name, value in seconds.items():
        per_rank = args.images / args.processes / value
        overhead = "" if name == "loose" else f"  overhead {100 * (value / seconds['loose'] - 1):+.1f}%"
        print(f"{name:<10}  {value:6.2f} s  {per_rank:8.1f} items/s per rank{overhead}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
