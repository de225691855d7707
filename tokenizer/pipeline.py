"""Dataset tokenization: folders of images -> token shards, resumable, crash-safe, split over torchrun ranks.

The sorted input list is cut into fixed chunks of ``shard_size`` files; chunk ``k`` becomes
``tokens-0000k.safetensors`` with its manifest and error rows in ``parts/``. Rank ``r`` of ``W`` takes the
chunks ``k = r, r + W, ...``. A WebDataset tar shard or a Parquet file is expanded into its samples, cut into
chunks of its own, taken by one rank (a tar) or shared among the ranks (a Parquet file's; ``_chunks``;
``data.containers``); a video in a tar is streamed from its place there (``data.byte_range``). A chunk is committed by renaming
its shard into place after its part files, so after a crash (SIGKILL included) a rerun redoes only the chunks without a shard and ends with the same
bytes as an uninterrupted run. A finished shard whose inputs changed since (size or modification time, kept
in ``parts/inputs-0000k.jsonl``) is done again. When every chunk is done, one process joins the parts into
``manifest.jsonl`` and ``errors.jsonl``. ``run.json`` pins the tokenizer identity, the preprocessing, the
video sampling, the file-size limit and the input list: an output folder made with other ones, or a non-empty folder without ``run.json``, is refused, and
one run at a time holds the folder (``_output``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ._atomic import write_text_atomically
from ._chunks import plan_chunks
from ._distributed import barrier, default_device, init_from_environment
from ._output import PARTS_DIR, RUN_FILE, OutputBusyError, OutputMismatchError, claimed_output  # noqa: F401 (API)
from ._progress import WorkProgress, format_rate, work_rates
from .data.containers import ContainedItem, TableColumns
from .data.items import InputItem, InputReader, VideoSampling, crop_to_factor, input_stat
from .data.preprocess import ImagePreprocess
from .data.video import ReadStats, VideoReadError, VideoSource, iter_windows
from .models import Tokenizer, VideoTokenizer
from .tokens import IMAGE as IMAGE_KIND
from .tokens import VIDEO as VIDEO_KIND
from .tokens import list_shards, shard_name, write_shard

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class StrictModeError(RuntimeError):
    """``--strict``: an input could not be tokenized."""


@dataclass
class EncodeSummary:
    items: int = 0  # tokenized in this run
    tokens: int = 0
    errors: int = 0
    shards_written: int = 0
    shards_skipped: int = 0  # already done by an earlier run
    shards_redone: int = 0  # done by an earlier run, but some of their inputs changed since (in shards_written)
    seconds: float = 0.0  # the whole call, model hashing and reading included
    error_kinds: dict[str, int] = field(default_factory=dict)
    pixels: int = 0  # tokenized: frames x height x width after preprocessing, summed over the items
    frames: int = 0  # video frames tokenized
    upscaled: int = 0  # items smaller than the --size crop, scaled up to it ("upscaled" in their manifest rows)

    def line(self) -> str:
        """One line for people: counts, and rates over ``seconds`` (items/s, pixels/s, video frames/s)."""
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items()))
        rates = work_rates(self.seconds, pixels=self.pixels, frames=self.frames)
        return (
            f"tokenized {self.items} items ({self.tokens} tokens) into {self.shards_written} shards in "
            f"{self.seconds:.1f} s ({format_rate(self.items, self.seconds, 'items')}, {rates}); "
            f"{self.shards_skipped} shards were already done; "
            + (f"{self.shards_redone} shards were redone (inputs changed); " if self.shards_redone else "")
            + (f"{self.upscaled} items were scaled up to --size; " if self.upscaled else "")
            + f"{self.errors} errors"
            + (f" ({kinds}; see errors.jsonl)" if self.errors else "")
        )


def tokenizer_identity(model: Tokenizer) -> dict[str, Any]:
    """What makes tokens comparable: architecture and weights hashes, vocabulary, quantizer, factors."""
    config = model.config.to_dict()
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    quantizer = config["quantizer"]
    return {
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "weights_sha256": weights.hexdigest(),
        "vocabulary": model.codebook_size,
        "quantizer": quantizer.get("kind"),
        "levels": quantizer.get("levels"),
        "depth": quantizer.get("depth", 1),
        # time, height, width; a video grid of t token frames covers 1 + (t - 1) * temporal factor frames
        "downsample": [getattr(model, "temporal_factor", 1), model.downsample_factor, model.downsample_factor],
    }


def _identity_collate(item: InputItem) -> InputItem:
    return item


# -- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    preprocess: ImagePreprocess
    video: VideoSampling = field(default_factory=VideoSampling)  # which frames of each video (video models)
    shard_size: int = 1000  # input files (or samples of one tar / Parquet file) per shard
    batch_size: int = 16
    workers: int = 0
    device: str | None = None  # None: this rank's GPU, else the CPU
    dtype: str = "fp32"  # autocast dtype of the encoder ("fp32" disables autocast); quantization stays fp32
    strict: bool = False  # stop at the first input that cannot be tokenized
    progress: bool = True
    max_file_bytes: int | None = None  # largest input file read; None: DEFAULT_MAX_{IMAGE,VIDEO}_BYTES by kind
    columns: TableColumns = field(default_factory=TableColumns)  # Parquet inputs: image column, kept columns

    def __post_init__(self) -> None:
        for name, minimum in (("shard_size", 1), ("batch_size", 1), ("workers", 0)):
            if getattr(self, name) < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.max_file_bytes is not None and self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be at least 1, got {self.max_file_bytes}")


def encode_dataset(
    inputs: Sequence[Path], model: Tokenizer, out_dir: str | Path, options: EncodeOptions
) -> EncodeSummary:
    """Tokenize ``inputs`` (sorted file paths; tar shards and Parquet files among them are expanded into their
    samples, whose manifest rows carry a ``meta`` dict) into token shards under ``out_dir``; see the module docstring.

    Under torchrun (``WORLD_SIZE`` > 1) each rank takes its chunks and rank 0 writes the manifest after a
    barrier. Returns this rank's summary. Raises ``OutputMismatchError`` for a folder made differently (or
    not by this tool), ``OutputBusyError`` while another run holds it, and ``StrictModeError`` with ``strict``
    at the first bad input.
    """
    started = time.perf_counter()
    world, rank, local_rank = init_from_environment()
    device = torch.device(options.device) if options.device else default_device(local_rank)
    out_dir = Path(out_dir)
    model = model.to(device).eval()
    _check_video_options(model, options.video)
    identity = tokenizer_identity(model)  # hashes the weights: once per run
    run = {
        "format": "tessera-tokens",
        "tokenizer": identity,
        "preprocess": asdict(options.preprocess),
        "video": asdict(options.video),
        "shard_size": options.shard_size,
        "max_file_bytes": options.max_file_bytes,  # which files are read at all
        "inputs": len(inputs),
        "inputs_sha256": hashlib.sha256("\n".join(map(str, inputs)).encode()).hexdigest(),
    }
    plan = plan_chunks(inputs, options.shard_size, options.columns, world, rank)
    if plan.containers:  # tar / Parquet inputs: their samples, and the columns read (absent for loose files)
        run["containers"] = {"items": plan.items, **asdict(options.columns)}
    with claimed_output(out_dir, run, rank):
        chunks = plan.chunks
        mine = [k for k, chunk in enumerate(chunks) if chunk.owner % world == rank]
        done = {p.name for p in list_shards(out_dir)}
        summary = EncodeSummary()
        pending = [k for k in mine if shard_name(k) not in done or _redo_changed(out_dir, k, chunks[k].items, summary)]
        summary.shards_skipped = len(mine) - len(pending)
        total = sum(chunks[k].size for k in pending)
        desc = f"encode[{rank}]" if world > 1 else "encode"
        with WorkProgress(total, desc, enabled=options.progress) as progress:
            for k in pending:
                _encode_chunk(k, chunks[k].items, model, identity, out_dir, options, device, summary, progress)
        summary.pixels, summary.frames = progress.pixels, progress.frames
        barrier()
        if rank == 0:
            _join_parts(out_dir, len(chunks))
    summary.seconds = time.perf_counter() - started
    return summary


def _redo_changed(out_dir: Path, index: int, paths: Sequence[Path | ContainedItem], summary: EncodeSummary) -> bool:
    """Whether finished shard ``index`` must be done again because an input's size or modification time differs
    from the one recorded when it was read (or nothing was recorded: a folder of an older version). If so, the
    shard is removed first, so that a run killed while redoing it redoes it again."""
    try:
        rows = _read_lines(out_dir / PARTS_DIR / f"inputs-{index:05d}.jsonl")
        recorded = {row["source"]: row["stat"] for row in rows}
    except FileNotFoundError:
        recorded = {}
    changed = [
        _source(p)
        for p in paths
        if _source(p) not in recorded or _as_stat(recorded[_source(p)]) != input_stat(_file(p))
    ]
    if not changed:
        return False
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    log.warning("redoing %s: %d of its inputs changed since it was written (%s)", shard_name(index), len(changed),
                shown)  # fmt: skip
    (out_dir / shard_name(index)).unlink(missing_ok=True)
    summary.shards_redone += 1
    return True


def _as_stat(value: Any) -> tuple[int, int] | None:
    return tuple(value) if isinstance(value, list) else None


def _source(item: Path | ContainedItem) -> str:
    """The ``source`` of an input item in the manifest: a file's path, or ``shard.tar#key`` / ``file.parquet#row``."""
    return str(item) if isinstance(item, Path) else item.source


def _file(item: Path | ContainedItem) -> Path:
    """The file whose size and modification time stand for the item's: itself, or its container."""
    return item if isinstance(item, Path) else item.path


def _encode_chunk(
    index: int,
    paths: Sequence[Path | ContainedItem],
    model: Tokenizer,
    identity: dict[str, Any],
    out_dir: Path,
    options: EncodeOptions,
    device: torch.device,
    summary: EncodeSummary,
    progress: WorkProgress,
) -> None:
    """Tokenize chunk ``index`` and write its shard and part files. ``progress`` counts an item once its
    tokens exist (and a bad input once it is recorded), never when it is merely read."""
    reader = InputReader(list(paths), options.preprocess, options.video, videos=isinstance(model, VideoTokenizer),
                         max_file_bytes=options.max_file_bytes)  # fmt: skip
    loader = DataLoader(
        reader,
        batch_size=None,
        collate_fn=_identity_collate,
        num_workers=options.workers,
    )
    grids: dict[int, torch.Tensor] = {}
    records: dict[int, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    stats: dict[int, tuple[int, int] | None] = {}  # (size, mtime_ns) of each input as read, for resume checks
    buckets: dict[tuple[int, ...], list[InputItem]] = {}

    def encode(batch: list[InputItem]) -> None:
        grids.update(_encode_batch(model, batch, device, options.dtype))
        frames = [item.pixels.shape[1] if item.pixels.ndim == 4 else 0 for item in batch]  # [3, T, H, W]: clips
        progress.advance(len(batch), pixels=sum(item.pixels[0].numel() for item in batch), frames=sum(frames))

    for item in loader:
        stats[item.position] = item.file_stat
        if item.stream_video:
            try:
                grids[item.position] = _encode_video_stream(
                    model, item.video or Path(item.source), options, item.record, device, progress
                )
                records[item.position] = {"source": item.source, **item.record}
                progress.advance(1)  # its frames and pixels were counted window by window
                continue
            except VideoReadError as err:
                item.record = {"kind": "unreadable", "error": str(err)}
        if item.pixels is None:
            if options.strict:  # the caller reports it: no "skipped" warning for what stops the run
                raise StrictModeError(item.record["error"])
            errors.append({"source": item.source, **item.record})
            summary.error_kinds[item.record["kind"]] = summary.error_kinds.get(item.record["kind"], 0) + 1
            log.warning("skipped %s", item.record["error"])
            progress.advance(1)
            continue
        records[item.position] = {"source": item.source, **item.record}
        bucket = buckets.setdefault(tuple(item.pixels.shape), [])
        bucket.append(item)
        if len(bucket) == options.batch_size:
            encode(buckets.pop(tuple(item.pixels.shape)))
    for shape in sorted(buckets, key=lambda s: buckets[s][0].position):
        encode(buckets[shape])

    name = shard_name(index)
    order = sorted(grids)
    manifest = [
        {**records[p], "shard": name, "position": i, "shape": list(grids[p].shape)} for i, p in enumerate(order)
    ]
    kinds = [VIDEO_KIND if records[p]["kind"] == "video" else IMAGE_KIND for p in order]
    parts = out_dir / PARTS_DIR
    _write_lines(parts / f"manifest-{index:05d}.jsonl", manifest)
    _write_lines(parts / f"errors-{index:05d}.jsonl", errors)
    inputs = [{"source": _source(p), "stat": stats.get(i)} for i, p in enumerate(paths)]
    _write_lines(parts / f"inputs-{index:05d}.jsonl", inputs)
    write_shard(out_dir / name, [grids[p] for p in order], kinds, identity)
    summary.items += len(order)
    summary.tokens += sum(int(grids[p].numel()) for p in order)
    summary.upscaled += sum(1 for p in order if records[p].get("upscaled"))
    summary.errors += len(errors)
    summary.shards_written += 1


@torch.no_grad()
def _encode_batch(
    model: Tokenizer, items: list[InputItem], device: torch.device, dtype: str
) -> dict[int, torch.Tensor]:
    pixels = torch.stack([item.pixels for item in items]).to(device)
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    with autocast:
        indices = model.encode(pixels).cpu()
    return {item.position: grid for item, grid in zip(items, indices)}


def _check_video_options(model: Tokenizer, sampling: VideoSampling) -> None:
    if not isinstance(model, VideoTokenizer):
        return
    tf = model.temporal_factor
    if sampling.clip_frames is not None and (sampling.clip_frames - 1) % tf:
        raise ValueError(f"clip_frames must be 1 + k * {tf} for this model (1, {1 + tf}, {1 + 2 * tf}, ...), "
                         f"got {sampling.clip_frames}")  # fmt: skip
    if sampling.clip_frames is None and sampling.fps is not None:
        raise ValueError("fps resampling applies to clips (set clip_frames); whole videos use stride")


@torch.no_grad()
def _encode_video_stream(
    model: VideoTokenizer,
    path: VideoSource,
    options: EncodeOptions,
    record: dict[str, Any],
    device: torch.device,
    progress: WorkProgress | None = None,
) -> torch.Tensor:
    """Tokenize a whole video window by window (memory bounded by the window), counting each window's frames
    and pixels in ``progress`` once its tokens exist; adds the window layout,
    the frames tokenized, the trailing frames dropped (fewer than one token frame) and the frames rescaled to
    the video's size (``resized_frames``, after a mid-stream resolution change) to ``record``."""
    tf = model.temporal_factor
    later = max(tf, options.video.window // tf * tf)
    first = 1 + later
    preprocess, sampling = options.preprocess, options.video
    stats = ReadStats()  # counts frames rescaled after a mid-stream resolution change
    windows = iter_windows(
        path, first, later, start=sampling.start, stride=sampling.stride, resize=preprocess.resize,
        size=preprocess.size, crop=preprocess.crop, seed=int(record["sha256"][:16], 16), stats=stats,
    )  # fmt: skip
    layout: list[int] = []
    dropped = 0

    def trimmed() -> Iterator[torch.Tensor]:
        nonlocal dropped
        for window in windows:
            frames = window.shape[1]
            keep = 1 + (frames - 1) // tf * tf if not layout else frames // tf * tf
            dropped += frames - keep
            if keep == 0:
                continue
            layout.append(keep)
            yield crop_to_factor(window[:, :keep], preprocess.factor)[None].to(device)

    autocast = torch.autocast(device.type, dtype=DTYPES[options.dtype], enabled=options.dtype != "fp32")
    with contextlib.closing(windows), autocast:  # a failure closes the video file now, not at garbage collection
        parts: list[torch.Tensor] = []
        for tokens in model.encode_windows(trimmed()):
            parts.append(tokens.cpu())
            if progress is not None:  # window i holds layout[i] frames; tokens [1, t, h, w(, depth)]
                frames = layout[len(parts) - 1]
                area = tokens.shape[2] * tokens.shape[3] * model.downsample_factor**2
                progress.advance(pixels=frames * area, frames=frames)
    if not parts:
        raise VideoReadError(f"{str(path)!r}: no frames could be read")
    record.update(frames=sum(layout), frames_dropped=dropped, windows=layout, resized_frames=stats.resized_frames)
    return torch.cat(parts, dim=1)[0]


# -- files ------------------------------------------------------------------------------------------


def _join_parts(out_dir: Path, chunks: int) -> None:
    """Concatenate the per-chunk parts, in chunk order, into manifest.jsonl and errors.jsonl."""
    parts = out_dir / PARTS_DIR
    for kind in ("manifest", "errors"):
        text = "".join((parts / f"{kind}-{k:05d}.jsonl").read_text() for k in range(chunks))
        write_text_atomically(out_dir / f"{kind}.jsonl", text)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomically(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
