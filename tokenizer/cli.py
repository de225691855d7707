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
    print(f"triton: {'installed' if _dispatch.HAS_TRITON else 'not installed'}"
          f"  interpreter: {'on' if _dispatch.interpreting() else 'off'}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        path = "triton" if _dispatch.use_triton(device) else "torch"
        print(f"{device.type}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="show which kernel path (triton or torch) each device uses").set_defaults(
        func=_backends
    )
    args = parser.parse_args(argv)
    return args.func(args)
