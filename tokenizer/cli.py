"""The ``tokenizer`` command (also ``python -m tokenizer``). Parsing only; work lives in the library."""

from __future__ import annotations

import argparse
import platform

import torch

from . import __version__


def _backends(args: argparse.Namespace) -> int:
    """Print which kernel path each device takes, and why."""
    from kernels import _dispatch

    print(f"tokenizer {__version__}  python {platform.python_version()}  torch {torch.__version__}")
    print(
        f"triton: {'installed' if _dispatch.HAS_TRITON else 'not installed'}"
        f"  interpreter: {'on' if _dispatch.interpreting() else 'off'}"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        path = "triton" if _dispatch.use_triton(device) else "torch"
        print(f"{device.type}: {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train a tokenizer from a YAML/JSON config (see README, "Train a tokenizer")."""
    import logging

    from .train import Trainer
    from .train_config import load_train_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {"out_dir": args.out_dir} if args.out_dir else None
    config = load_train_config(args.config, overrides)
    Trainer(config, resume=args.resume, device=args.device).train(until=args.until)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="show which kernel path (triton or torch) each device uses").set_defaults(
        func=_backends
    )
    train = sub.add_parser("train", help="train a VQ-GAN tokenizer (torchrun-aware)")
    train.add_argument("--config", required=True, help="YAML or JSON training config")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    train.add_argument("--out-dir", help="override the config's out_dir")
    train.add_argument(
        "--until", type=int, help="stop (with a checkpoint) after this step; the schedule still spans `steps`"
    )
    train.add_argument("--device", help="torch device (default: this rank's GPU, else the CPU)")
    train.set_defaults(func=_train)
    args = parser.parse_args(argv)
    return args.func(args)
