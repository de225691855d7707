"""Side-by-side report: each kernel (and, with --peers, each quantizer) against what it replaces.

    python benchmarks/report.py [--quick] [--peers] [--nearest] [--nearest-shapes NxKxD,...]
        [--nearest-impls ours,faiss,...] [--rounds R] [--tokenizer] [--video] [--no-kernels] [--markdown PATH]

Times are the best of a few synchronised calls after a warm-up (``--peers`` and ``--nearest``: min and
median of ``--rounds`` interleaved calls, candidates taking turns so load changes hit all alike); peak
memory is measured on a separate call (CPU: growth of the process's resident-set high-water mark;
CUDA: max allocated).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from _measure import interleaved_runs, machine_lines, median, peak_memory_bytes, time_runs

import kernels
from kernels import reference


@dataclass
class Case:
    op: str
    shape: str
    ours: Callable[[], Any]
    baselines: list[tuple[str, Callable[[], Any]]]


def kernel_cases(device: torch.device, quick: bool) -> list[Case]:
    n, k, d = (8192, 4096, 8) if quick else (65536, 16384, 8)
    z, codebook = torch.randn(n, d, device=device), torch.randn(k, d, device=device)
    zc, cc = torch.randn(n // 4, 32, device=device), torch.randn(k // 4, 32, device=device)
    z_stats = torch.randn(65536, 32, device=device)
    idx = torch.randint(0, 1024, (65536,), device=device)
    rows = (1 << 18) if quick else (1 << 20)
    z_fsq = torch.randn(rows, 4, device=device, requires_grad=True)
    grad = torch.randn(rows, 4, device=device)

    def fsq_step(fn):
        return lambda: torch.autograd.grad(fn(z_fsq, (8, 5, 5, 5))[0], z_fsq, grad)

    return [
        Case(
            "nearest_code",
            f"N={n} K={k} D={d}",
            lambda: kernels.nearest_code(z, codebook),
            [
                ("cdist+argmin", lambda: torch.cdist(z, codebook).argmin(1)),
                ("reference", lambda: reference.nearest_code(z, codebook)),
            ],
        ),
        Case(
            "nearest_code cosine",
            f"N={n // 4} K={k // 4} D=32",
            lambda: kernels.nearest_code(zc, cc, metric="cosine"),
            [("reference", lambda: reference.nearest_code(zc, cc, metric="cosine"))],
        ),
        Case(
            "codebook_stats",
            "N=65536 K=1024 D=32",
            lambda: kernels.codebook_stats(z_stats, idx, 1024),
            [("one-hot reference", lambda: reference.codebook_stats(z_stats, idx, 1024))],
        ),
        Case(
            "fsq fwd+bwd",
            f"rows={rows} levels=8,5,5,5",
            fsq_step(kernels.fsq_quantize),
            [("autograd reference", fsq_step(reference.fsq_quantize))],
        ),
    ]


def peer_cases(device: torch.device) -> list[Case]:
    from bench_quantizers import lfq_step, vq_step

    return [
        Case(
            "VQ train fwd",
            "K=16384 D=8 N=16384",
            vq_step("ours", device),
            [("vector-quantize-pytorch", vq_step("theirs", device))],
        ),
        Case(
            "LFQ fwd+bwd",
            "d=14, 16x14x32x32",
            lfq_step("ours", device),
            [("vector-quantize-pytorch", lfq_step("theirs", device))],
        ),
    ]


def nearest_code_table(
    device: torch.device,
    quick: bool,
    rounds: int,
    shapes: list[tuple[int, int, int]] | None = None,
    impls: list[str] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """ours / faiss / chunked mm + argmin / cdist + argmin per grid shape and metric: min and median
    of interleaved runs, peak MiB, GFLOP/s (2NKD / min time) and its share of this machine's torch.mm,
    time / faiss's time (min and median), and which path ours took (``_dispatch.nearest_code_path``)."""
    from bench_nearest_code import GRID, QUICK, mm_gflops, nearest_code_calls

    from kernels import _dispatch

    ceiling = mm_gflops(device)
    shapes = shapes or (QUICK if quick else GRID)
    print(f"\nnearest_code: torch.mm fp32 peak here {ceiling:.0f} GFLOP/s; {rounds} interleaved rounds per shape")
    header = ["metric", "N", "K", "D", "impl", "path", "min ms", "median ms", "peak MiB", "GFLOP/s", "% of mm",
              "/ faiss (min)", "/ faiss (median)"]  # fmt: skip
    rows = []
    for (n, k, d), metric in itertools.product(shapes, ("l2", "cosine")):
        z, codebook = torch.randn(n, d, device=device), torch.randn(k, d, device=device)
        calls = {
            name: fn
            for name, fn in nearest_code_calls(z, codebook, metric).items()
            if name != "reference" and (impls is None or name in impls)
        }
        samples = interleaved_runs(calls, device, rounds=rounds)
        faiss_min = min(samples["faiss"]) if "faiss" in samples else None
        faiss_median = median(samples["faiss"]) if "faiss" in samples else None
        ours_path = _dispatch.nearest_code_path(device)
        for name, fn in calls.items():
            best, mid = min(samples[name]), median(samples[name])
            peak = (peak_memory_bytes(fn, device)[1] or 0) / 2**20
            gflops = 2 * n * k * d / best / 1e9
            ratio = f"{best / faiss_min:.2f}" if faiss_min else "-"
            ratio_median = f"{mid / faiss_median:.2f}" if faiss_median else "-"
            rows.append([metric, str(n), str(k), str(d), name, ours_path if name == "ours" else "", f"{best * 1e3:.1f}",
                         f"{mid * 1e3:.1f}", f"{peak:.0f}", f"{gflops:.1f}", f"{100 * gflops / ceiling:.0f}", ratio,
                         ratio_median])  # fmt: skip
            print("  ".join(rows[-1]), flush=True)
    return header, rows


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"4096x1024x8,65536x16384x256"`` -> ``[(4096, 1024, 8), (65536, 16384, 256)]`` (N x K x D)."""
    try:
        return [tuple(int(v) for v in part.split("x")) for part in text.split(",") if part]  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nearest-shapes wants NxKxD[,NxKxD...], got {text!r}") from None


def peer_table(device: torch.device, rounds: int) -> tuple[list[str], list[list[str]]]:
    """Quantizers vs vector-quantize-pytorch: min and median of ``rounds`` interleaved calls each."""
    header = ["op", "shape", "vs", "ours min ms", "ours median ms", "theirs min ms", "theirs median ms",
              "speed-up (min)", "speed-up (median)"]  # fmt: skip
    rows = []
    print(f"\nquantizers vs peers, {rounds} interleaved rounds")
    for case in peer_cases(device):
        for name, fn in case.baselines:
            samples = interleaved_runs({"ours": case.ours, "theirs": fn}, device, rounds=rounds)
            ours, theirs = samples["ours"], samples["theirs"]
            rows.append([case.op, case.shape, name, f"{min(ours) * 1e3:.1f}", f"{median(ours) * 1e3:.1f}",
                         f"{min(theirs) * 1e3:.1f}", f"{median(theirs) * 1e3:.1f}",
                         f"{min(theirs) / min(ours):.1f}x", f"{median(theirs) / median(ours):.1f}x"])  # fmt: skip
            print("  ".join(rows[-1]), flush=True)
    return header, rows


def vq_init_table(device: torch.device, rounds: int) -> tuple[list[str], list[list[str]]]:
    """Our VQ's first training step (k-means init, fresh quantizer each call) against its ordinary step:
    min and median of ``rounds`` interleaved calls each, and the first step's codebook usage/perplexity."""
    from bench_quantizers import vq_first_and_ordinary_step

    header = ["metric", "first min ms", "first median ms", "ordinary min ms", "ordinary median ms",
              "first / ordinary (min)", "first / ordinary (median)", "usage", "perplexity"]  # fmt: skip
    rows = []
    print(f"\nVQ first training step (k-means init) vs ordinary step, K=16384 D=8 N=16384, {rounds} interleaved rounds")
    for metric in ("l2", "cosine"):
        first, ordinary = vq_first_and_ordinary_step(device, metric)
        samples = interleaved_runs({"first": first, "ordinary": ordinary}, device, rounds=rounds)
        f, o = samples["first"], samples["ordinary"]
        metrics = first().metrics
        rows.append([metric, f"{min(f) * 1e3:.1f}", f"{median(f) * 1e3:.1f}", f"{min(o) * 1e3:.1f}",
                     f"{median(o) * 1e3:.1f}", f"{min(f) / min(o):.1f}", f"{median(f) / median(o):.1f}",
                     f"{float(metrics['usage']):.4f}", f"{float(metrics['perplexity']):.0f}"])  # fmt: skip
        print("  ".join(rows[-1]), flush=True)
    return header, rows


def measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` timed calls (the memory call doubles as warm-up), and peak MiB."""
    _, peak = peak_memory_bytes(fn, device)
    return min(time_runs(fn, device, rounds=repeats)), (peak or 0) / 2**20


def tokenizer_table(device: torch.device, repeats: int) -> tuple[list[str], list[list[str]]]:
    """Images/s of encode (fused vs reference quantization) and decode, per config; printed as it goes."""
    from bench_tokenizer import CONFIGS, SIZE, batch_size, tokenizer_calls

    header = ["config", "call", "batch", "ms per call", "images/s", "peak MiB"]
    rows = []
    print(f"\nimage tokenizer at {SIZE}x{SIZE}")
    for name in CONFIGS:
        for call, fn in tokenizer_calls(name, device).items():
            seconds, peak = measure(fn, device, repeats)
            batch = batch_size(device)
            rows.append([name, call, str(batch), f"{seconds * 1e3:.0f}", f"{batch / seconds:.2f}", f"{peak:.0f}"])
            print("  ".join(rows[-1]), flush=True)
    return header, rows


def video_table(device: torch.device) -> tuple[list[str], list[list[str]]]:
    """Clips/s at 17x256x256, and peak memory of 1- and 10-minute videos streamed in windows."""
    from bench_video import CLIP, FPS, LONG_SIZE, WINDOW, clip_batch, encode_clips, one_pass, stream_long_video

    header = ["case", "frames", "seconds", "throughput", "peak MiB"]
    rows = []
    print("\nvideo tokenizer")
    seconds, peak = measure(encode_clips(device), device, 2)
    batch = clip_batch(device)
    rows.append([f"encode {batch}x{'x'.join(map(str, CLIP))}", str(CLIP[0] * batch), f"{seconds:.2f}",
                 f"{batch / seconds:.3f} clips/s", f"{peak:.0f}"])  # fmt: skip
    print("  ".join(rows[-1]), flush=True)
    for label, factory, minutes in (
        (f"one pass, {LONG_SIZE}x{LONG_SIZE}", one_pass, 1.0),
        (f"windows of {WINDOW}, {LONG_SIZE}x{LONG_SIZE}", stream_long_video, 1.0),
        (f"windows of {WINDOW}, {LONG_SIZE}x{LONG_SIZE}", stream_long_video, 10.0),
    ):
        started = time.perf_counter()  # one call: memory and time together (these runs take minutes)
        _, peak_bytes = peak_memory_bytes(factory(minutes, device), device)
        seconds, peak = time.perf_counter() - started, (peak_bytes or 0) / 2**20
        frames = int(minutes * 60 * FPS)
        rows.append([f"{minutes:g} min at {FPS} fps, {label}", str(frames), f"{seconds:.1f}",
                     f"{frames / seconds:.0f} frames/s", f"{peak:.0f}"])  # fmt: skip
        print("  ".join(rows[-1]), flush=True)
    return header, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller shapes (seconds, not minutes)")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also compare quantizers with vector-quantize-pytorch, and our VQ's first (k-means) step with its "
        "ordinary step (min and median of interleaved runs)",
    )
    parser.add_argument(
        "--nearest",
        action="store_true",
        help="also nearest_code vs faiss / mm+argmin / cdist over the issue's grid (--quick: 5 shapes)",
    )
    parser.add_argument(
        "--nearest-shapes",
        type=parse_shapes,
        help="--nearest over these NxKxD shapes instead (comma-separated, e.g. 4096x1024x8,4096x1024x256)",
    )
    parser.add_argument(
        "--nearest-impls",
        help="--nearest: only these candidates (comma-separated of ours,faiss,mm_argmin,cdist_argmin)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --peers and --nearest")
    parser.add_argument("--tokenizer", action="store_true", help="also image-tokenizer throughput at 256x256")
    parser.add_argument("--video", action="store_true", help="also video clips/s and long-video memory (minutes)")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel table (with the flags above)")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats = 2 if device.type == "cpu" and not args.quick else 3
    cases = [] if args.no_kernels else kernel_cases(device, args.quick)
    print("\n".join(machine_lines(device)) + "\n")
    header = ["op", "shape", "vs", "ours ms", "theirs ms", "speed-up", "ours MiB", "theirs MiB", "memory"]
    table = []
    for case in cases:
        ours_t, ours_m = measure(case.ours, device, repeats)
        for name, fn in case.baselines:
            theirs_t, theirs_m = measure(fn, device, repeats)
            ratio = (
                f"1/{theirs_m / ours_m:.0f}"
                if ours_m > 0.5 and theirs_m > ours_m
                else f"{ours_m / max(theirs_m, 1e-9):.2f}x"
            )
            table.append([
                case.op, case.shape, name, f"{ours_t * 1e3:.1f}", f"{theirs_t * 1e3:.1f}",
                f"{theirs_t / ours_t:.1f}x", f"{ours_m:.0f}", f"{theirs_m:.0f}", ratio,
            ])  # fmt: skip
            print("  ".join(table[-1]), flush=True)
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    extra_tables = []
    if args.peers:
        extra_tables.append(peer_table(device, args.rounds))
        extra_tables.append(vq_init_table(device, args.rounds))
    if args.nearest:
        impls = args.nearest_impls.split(",") if args.nearest_impls else None
        extra_tables.append(nearest_code_table(device, args.quick, args.rounds, args.nearest_shapes, impls))
    if args.tokenizer:
        extra_tables.append(tokenizer_table(device, repeats))
    if args.video:
        extra_tables.append(video_table(device))
    if args.markdown:
        lines = [*(f"    {line}" for line in machine_lines(device)), "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in table]
        for extra_header, rows in extra_tables:
            lines += ["", "| " + " | ".join(extra_header) + " |", "|" + "---|" * len(extra_header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
        args.markdown.write_text("\n".join(lines) + "\n")
        print(f"\nmarkdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
