"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Everything is written to a temporary name beside the target (``.<name>.<pid>.<random>.tmp``, so a folder scan
that skips dot-files never sees it and a cleanup can match ``.*.tmp``), flushed to disk, then renamed over
the target; the folder is synced so the rename itself survives a crash. On failure the temporary file is
removed and the old target stays.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s new contents to; it replaces ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def write_bytes_atomically(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_target(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomically(target: str | os.PathLike[str], text: str) -> None:
    with atomic_target(target) as temporary:
        temporary.write_text(text)


def _sync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename durable
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
