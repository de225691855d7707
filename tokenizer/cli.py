"""tokenizer: turn images and videos into discrete tokens, back into pixels, and train tokenizers.

Run `tokenizer COMMAND --help` for a command's options; README.md has worked examples."""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import re
import sys

import torch
from safetensors import SafetensorError

from . import __version__


def _backends(args: argparse.Namespace) -> int:
    """Print which kernel path each device takes, and why."""
    from kernels import _dispatch

    print(f"tokenizer {__version__}  python {platform.python_version()}  torch {torch.__version__}")
    cpu_kernels = "/".join(_dispatch.CPU_KERNEL_ISAS) if _dispatch.HAS_CPU_KERNELS else "not available"
    print(
        f"triton: {'installed' if _dispatch.HAS_TRITON else 'not installed'}"
        f"  interpreter: {'on' if _dispatch.interpreting() else 'off'}"
        f"  compiled CPU kernels: {cpu_kernels}"
        f"  faiss: {'installed' if _dispatch.HAS_FAISS else 'not installed'}"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        path = "triton" if _dispatch.use_triton(device) else "torch"
        print(f"{device.type}: {path} (nearest-code search: {_search_path(device)})")
    return 0


def _search_path(device: torch.device) -> str:
    """The path ``kernels.nearest_code`` takes on ``device``, with the compiled kernel's instruction set."""
    from kernels import _dispatch

    path = _dispatch.nearest_code_path(device)
    if path == "native":
        from kernels.cpu_impl.nearest_code import ISA

        return f"native {ISA}"
    return path


def _train(args: argparse.Namespace) -> int:
    """Train a tokenizer from a YAML/JSON config (see README, "Train a tokenizer")."""
    import logging

    from .train import Trainer
    from .train_config import load_train_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"out_dir": args.out_dir} if args.out_dir else {}
    if args.data:
        overrides["data.train"] = args.data
    config = load_train_config(args.config, overrides)
    Trainer(config, resume=args.resume, overwrite=args.overwrite, device=args.device).train(until=args.until)
    return 0


def _encode(args: argparse.Namespace) -> int:
    """Tokenize images into token shards (see README, "Tokenize a dataset")."""
    import logging

    from .data.containers import TableColumns
    from .data.items import VideoSampling
    from .data.preprocess import ImagePreprocess
    from .data.sources import collect_inputs, media_kind
    from .models import load_tokenizer, shipped_model_dir
    from .pipeline import EncodeOptions, OutputBusyError, StrictModeError, encode_dataset

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    inputs = collect_inputs(args.inputs, special_files=True)  # FIFOs, folders named x.jpg, ...: reported
    if args.model is None:  # the shipped defaults: the video one as soon as there is a video to tokenize
        videos = any(media_kind(p) == "video" and p.is_file() for p in inputs)
        name = "default-video" if videos else "default"
        model = load_tokenizer(shipped_model_dir(name))
        print(f"using the shipped tokenizer {name!r}" + (" (the inputs hold videos, so it tokenizes the images "
              "too)" if videos else "") + "; pass --model to choose another", file=sys.stderr)  # fmt: skip
    else:
        model = load_tokenizer(args.model, format=args.format)
    options = EncodeOptions(
        preprocess=ImagePreprocess(
            args.resize, args.size, args.crop, model.downsample_factor, args.max_pixels, args.too_large
        ),
        video=VideoSampling(args.clip_frames, args.frame_stride, args.fps, args.start, args.window),
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        dtype=args.dtype,
        strict=args.strict,
        max_file_bytes=args.max_file_bytes,
        columns=TableColumns(args.image_column, tuple(filter(None, (args.keep_columns or "").split(",")))),
    )
    try:
        summary = encode_dataset(inputs, model, args.out, options)
    except StrictModeError as err:
        print(f"error (--strict): {err}; stopped there (without --strict, bad inputs go to errors.jsonl and the "
              "run goes on)", file=sys.stderr)  # fmt: skip
        return 1
    except (OutputBusyError, ImportError) as err:  # ImportError: Parquet inputs without pyarrow
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.items == 0 and summary.shards_skipped == 0:  # nothing done now, nothing done before
        why = (f"all {summary.errors} inputs failed (the reasons are in {os.path.join(args.out, 'errors.jsonl')})"
               if summary.errors else "no input files were found")  # fmt: skip
        print(f"error: nothing was tokenized: {why}", file=sys.stderr)
        return 1
    return 0


def _decode(args: argparse.Namespace) -> int:
    """Decode a token folder back into images."""
    from .models import load_tokenizer
    from .reconstruct import decode_folder, shipped_model_for

    if args.model is None:
        name, model = shipped_model_for(args.tokens)
        print(f"using the shipped tokenizer {name!r}, which made these tokens", file=sys.stderr)
    else:
        model = load_tokenizer(args.model, format=args.format)
    written = decode_folder(args.tokens, model, args.out, batch_size=args.batch_size, device=args.device)
    print(f"wrote {len(written)} reconstructions (PNG images, mp4 videos) to {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Tokenize the bundled samples with the shipped defaults; write tokens, reconstructions, a report."""
    from .demo import run_demo

    report = run_demo(args.out, image_model=args.model, video_model=None if args.no_video else args.video_model,
                      device=args.device)  # fmt: skip
    print(report.to_markdown())
    return 1 if report.skipped else 0


def _inspect(args: argparse.Namespace) -> int:
    """Say which family a checkpoint belongs to and the architecture inferred from it."""
    import json

    from .models import OWN_FORMAT, SHIPPED_MODELS, is_saved_tokenizer
    from .models.formats import inspect_checkpoint

    own = args.path in SHIPPED_MODELS or is_saved_tokenizer(args.path)
    if args.format == OWN_FORMAT or (args.format is None and own):
        print(f"{args.path}: a tessera-tokenizer model folder; `tokenizer info {args.path}` describes it")
        return 0
    found = inspect_checkpoint(args.path, format=args.format).to_dict()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{found['source']}: {found['family']} ({found['description']})")
    print(f"  state dicts: {', '.join(repr(k) for k in found['state_dicts'])}; {found['tensors']} tensors")
    print(f"  vocabulary {found['codebook_size']}, downsampling x{found['downsample_factor']}")
    print("  config: " + json.dumps(found["config"], sort_keys=True))
    return 0


def _convert(args: argparse.Namespace) -> int:
    """Write a checkpoint of another project as our own model folder (config.json + model.safetensors)."""
    from .models import load_tokenizer

    model = load_tokenizer(args.path, format=args.format)
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    model.save_pretrained(args.out, weights_dtype=dtypes[args.dtype])
    print(f"wrote {args.out}: {type(model).__name__}, vocabulary {model.codebook_size}, "
          f"downsampling x{model.downsample_factor}")  # fmt: skip
    return 0


def _info(args: argparse.Namespace) -> int:
    from .info import describe

    print(describe(args.path))
    return 0


_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _byte_size(text: str) -> int:
    """``"1048576"``, ``"256M"``, ``"2GiB"`` -> bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", text, flags=re.IGNORECASE)
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size like 1048576, 256M or 2G, got {text!r}")
    return int(match[1]) * _BYTE_UNITS[match[2].lower()]


def _pixel_budget(text: str) -> int | None:
    """``"16777216"`` or ``"4096x4096"`` -> pixels; ``"0"`` or ``"none"`` -> None (no budget)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x*]\s*(\d+)\s*)?", text.lower())
    if text.strip().lower() == "none" or (match and int(match[1]) == 0 and match[2] is None):
        return None
    if match is None or int(match[1]) * int(match[2] or 1) < 1:
        raise argparse.ArgumentTypeError(f"expected a pixel count like 16777216 or 4096x4096, or 0/none, got {text!r}")
    return int(match[1]) * int(match[2] or 1)


ENCODE_EXIT_STATUS = (
    "exit status: 0 when items were tokenized (bad inputs are skipped into OUT/errors.jsonl) or a rerun found "
    "everything done; 1 when nothing was tokenized (every input failed, or none was found) or --strict met a "
    "bad input; 2 for bad arguments, a model that cannot be loaded, or an output folder in use or made differently"
)

FORMAT_HELP = (
    "how to read --model/PATH: 'tessera' (our model folders), or a checkpoint family: taming, llamagen, "
    "diffusers, cosmos, magvit2 (default: detected from the file)"
)


def main(argv: list[str] | None = None) -> int:
    from .data.pixel_budget import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(
        prog="tokenizer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of the commands below; `tokenizer COMMAND --help` lists its options",
    )
    sub.add_parser("backends", help="show which kernel path (triton or torch) each device uses").set_defaults(
        func=_backends
    )
    train = sub.add_parser("train", help="train a VQ-GAN tokenizer (torchrun-aware)")
    train.add_argument("--config", required=True, help="YAML or JSON training config")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    train.add_argument(
        "--overwrite", action="store_true", help="delete an earlier run in out_dir (checkpoints, log) and start anew"
    )
    train.add_argument("--out-dir", help="override the config's out_dir")
    train.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="training images/videos: a folder, file, glob or list; repeat for more. Replaces the config's data.train",
    )
    train.add_argument(
        "--until", type=int, help="stop (with a checkpoint) after this step; the schedule still spans `steps`"
    )
    train.add_argument("--device", help="torch device (default: this rank's GPU, else the CPU)")
    train.set_defaults(func=_train)
    encode = sub.add_parser(
        "encode", help="tokenize images and videos into token shards (resumable)", epilog=ENCODE_EXIT_STATUS
    )
    encode.add_argument(
        "inputs", nargs="+",
        help="folders (recursive), files, globs, brace ranges (shards/{00000..00099}.tar), .txt/.jsonl lists of "
        "paths; WebDataset .tar shards and .parquet files (a Hugging Face dataset's) are read sample by sample",
    )  # fmt: skip
    encode.add_argument(
        "--model",
        help="a model folder (save_pretrained / a training checkpoint) or a shipped name; default: 'default' "
        "for images, 'default-video' when the inputs hold a video; also a checkpoint of another project "
        "(taming/LDM .ckpt, LlamaGen .pt, diffusers VQModel folder, Cosmos DI folder, Open-MAGVIT2 .ckpt)",
    )
    encode.add_argument("--format", help=FORMAT_HELP)
    encode.add_argument("--out", required=True, help="output folder for shards, manifest.jsonl and errors.jsonl")
    encode.add_argument("--resize", type=int, help="resize the shorter side to this many pixels first")
    encode.add_argument(
        "--size", type=int,
        help="square crop side (a multiple of the model's downsampling); an image whose shorter side (after "
        "--resize) is smaller is first scaled up to it, and its manifest row says \"upscaled\": true",
    )  # fmt: skip
    encode.add_argument("--crop", choices=["center", "random"], default="center", help="where --size crops")
    encode.add_argument("--clip-frames", type=int, help="videos: one clip of this many frames (default: whole video)")
    encode.add_argument("--frame-stride", type=int, default=1, help="videos: take every n-th frame")
    encode.add_argument("--fps", type=float, help="videos (with --clip-frames): resample to this frame rate")
    encode.add_argument("--start", type=float, default=0.0, help="videos: start time in seconds")
    encode.add_argument("--window", type=int, default=32, help="whole videos: frames per window (bounds memory)")
    encode.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="images of one shape encoded together (default 16; more is faster, uses more memory)",
    )
    encode.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that read and decode input files in parallel (0: none, read in this process)",
    )
    encode.add_argument(
        "--shard-size", type=int, default=1000, help="input files (or samples of one tar/Parquet file) per shard"
    )
    encode.add_argument(
        "--image-column", metavar="NAME",
        help="Parquet inputs: the column of image bytes (binary or a {bytes, path} struct); default: the column "
        "the file's Hugging Face metadata calls an Image, else the only column of either type",
    )  # fmt: skip
    encode.add_argument(
        "--keep-columns", metavar="A,B",
        help="Parquet inputs: other columns copied into each manifest row's \"meta\" (e.g. caption,label); tar "
        "shards always copy their .json/.txt/.cls members there",
    )  # fmt: skip
    encode.add_argument("--device", help="torch device (default: this rank's GPU, else the CPU)")
    encode.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="encoder autocast dtype")
    encode.add_argument("--strict", action="store_true", help="stop with exit code 1 at the first bad input")
    encode.add_argument(
        "--max-file-bytes", type=_byte_size, metavar="SIZE",
        help="largest input file to read, e.g. 64M or 2G (larger ones go to errors.jsonl as too_large_file); "
        "default 256M for images, which are read whole into memory (this bounds it), and 16G for videos, which "
        "are streamed (this bounds the time spent on one file); a value given applies to both",
    )  # fmt: skip
    encode.add_argument(
        "--max-pixels", type=_pixel_budget, default=DEFAULT_MAX_PIXELS, metavar="N",
        help="pixel budget of one image as stored, e.g. 16777216 or 4096x4096 (the default, 16 MP); 0 or none: "
        "no budget. Its size is read from the header before decoding; see --too-large",
    )  # fmt: skip
    encode.add_argument(
        "--too-large", choices=["downscale", "skip"], default="downscale",
        help="an image over --max-pixels: 'downscale' (default) resizes it to fit, aspect kept (Lanczos), and its "
        "manifest row adds scale and scaled_size; 'skip' reports it in errors.jsonl as too_large",
    )  # fmt: skip
    encode.set_defaults(func=_encode)

    decode = sub.add_parser("decode", help="decode a token folder back into images (PNG) and videos (mp4)")
    decode.add_argument("tokens", help="a token folder written by `tokenizer encode`")
    decode.add_argument("--model", help="the model that made the tokens (default: the shipped one that did)")
    decode.add_argument("--format", help=FORMAT_HELP)
    decode.add_argument(
        "--out", required=True, help="folder for the reconstructions: a PNG per image, an mp4 per video"
    )
    decode.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="token grids of one shape decoded together (default 16; videos go one at a time)",
    )
    decode.add_argument("--device", help="torch device (default: the GPU if there is one, else the CPU)")
    decode.set_defaults(func=_decode)

    demo = sub.add_parser("demo", help="tokenize the bundled sample photos and clip with the shipped tokenizers")
    demo.add_argument("--out", default="tokenizer-demo", help="output folder (default: ./tokenizer-demo)")
    demo.add_argument("--model", default="default", help="image tokenizer: a model folder or a shipped name")
    demo.add_argument("--video-model", default="default-video", help="video tokenizer for the sample clip")
    demo.add_argument("--no-video", action="store_true", help="skip the sample clip")
    demo.add_argument("--device", help="torch device (default: the GPU if there is one, else the CPU)")
    demo.set_defaults(func=_demo)

    inspect = sub.add_parser("inspect", help="detect a pretrained checkpoint's family and show the inferred config")
    inspect.add_argument("path", help="a checkpoint file or folder (see README, 'Pretrained tokenizers')")
    inspect.add_argument("--format", help=FORMAT_HELP)
    inspect.add_argument("--json", action="store_true", help="print the findings as JSON")
    inspect.set_defaults(func=_inspect)

    convert = sub.add_parser("convert", help="write a pretrained checkpoint as our model folder (safetensors)")
    convert.add_argument("path", help="a checkpoint file or folder of another project")
    convert.add_argument("--out", required=True, help="the model folder to write (config.json + model.safetensors)")
    convert.add_argument("--format", help=FORMAT_HELP)
    convert.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                         help="store the network's weights in this dtype (the codebook stays fp32)")  # fmt: skip
    convert.set_defaults(func=_convert)

    info = sub.add_parser("info", help="summarise a model folder or a token folder")
    info.add_argument(
        "path",
        help="a token folder (from `tokenizer encode`), a model folder, or a shipped "
        "model's name (default, default-video), resolved as --model resolves it",
    )
    info.set_defaults(func=_info)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {_error_line(err)}", file=sys.stderr)
        return 2


# What bad input or a bad environment raises: bad files and arguments (ValueError, which includes JSON and
# decoding errors), files that cannot be read or written (OSError: missing, a file where a folder belongs,
# read-only, a full disk), pickles refused and safetensors containers that do not parse. Anything else
# (TypeError, KeyError, ...) is a bug of ours and keeps its traceback.
USER_ERRORS = (OSError, ValueError, pickle.UnpicklingError, SafetensorError)


def _error_line(err: BaseException) -> str:
    """One line for a user-facing failure, naming the file where the error knows it."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        where = os.fsdecode(err.filename)
        if isinstance(err, FileExistsError) and not os.path.isdir(where):
            return f"{where}: exists and is not a folder"
        return f"{where}: {err.strerror}"
    if isinstance(err, SafetensorError):
        return f"not a readable safetensors file: {err}"
    parts: list[str] = []  # a multi-line message (a list of tensors) as one line
    for line in filter(None, (line.strip() for line in str(err).splitlines())):
        if parts and parts[-1].endswith(":"):
            parts[-1] += " " + line
        else:
            parts.append(line)
    return "; ".join(parts)
