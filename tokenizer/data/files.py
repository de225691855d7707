"""Opening input files safely: regular files only, within a size limit, read with a bound.

A dataset run meets whatever a folder or a path list holds. Before a byte is read, ``check_input_file`` stats
the path (following symlinks) and refuses what is not a regular file -- a FIFO blocks its reader forever, a
symlink to ``/dev/zero`` never ends -- and what is larger than the limit (an 8 GB sparse file costs no disk
but would cost 8 GB of memory). ``read_input_file`` then reads at most ``max_bytes + 1`` bytes from a
descriptor it checks again, so a file swapped or grown after the check still cannot block or exceed it.
Each refusal is an ``InputFileError`` whose ``kind`` is the one recorded in ``errors.jsonl``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

NOT_A_FILE = "not_a_file"  # a folder, FIFO, socket, device or symlink loop
TOO_LARGE_FILE = "too_large_file"  # over the byte limit
UNREADABLE = "unreadable"  # missing, a dangling symlink, no permission

# Images are read whole into memory (once per DataLoader worker): the limit bounds that memory. 256 MiB is
# far above any photograph (a 16-megapixel 16-bit TIFF is 96 MiB) and what a gigapixel scan would need.
DEFAULT_MAX_IMAGE_BYTES = 256 << 20
# Videos are streamed (never held whole), so the limit only bounds the time spent hashing and decoding one
# file; 16 GiB holds hours of 1080p or about an hour of 4K at camera bit rates.
DEFAULT_MAX_VIDEO_BYTES = 16 << 30

_TYPES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class InputFileError(ValueError):
    """An input path that is not read: not a regular file, too large, or not accessible; ``kind`` says which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_input_file(path: str | Path, max_bytes: int | None) -> os.stat_result:
    """The ``os.stat`` of ``path`` (symlinks followed) if it is a regular file of at most ``max_bytes`` bytes
    (None: any size); raises ``InputFileError`` otherwise. Never opens the file."""
    try:
        info = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputFileError(NOT_A_FILE, f"{str(path)!r} is a symlink loop") from None
        raise InputFileError(UNREADABLE, f"cannot read {str(path)!r}: {err.strerror}") from None
    _check_stat(path, info, max_bytes)
    return info


def read_input_file(path: str | Path, max_bytes: int | None) -> bytes:
    """The bytes of ``path``, after ``check_input_file``; never more than ``max_bytes`` (None: no limit)."""
    check_input_file(path, max_bytes)
    # O_NONBLOCK: should a FIFO replace the file after the check, opening it returns at once (no writer
    # needed) and the fstat below refuses it; reading a regular file ignores the flag.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as err:
        raise InputFileError(UNREADABLE, f"cannot read {str(path)!r}: {err.strerror}") from None
    with os.fdopen(descriptor, "rb") as f:
        _check_stat(path, os.fstat(f.fileno()), max_bytes)
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise InputFileError(TOO_LARGE_FILE, f"{str(path)!r} grew past the limit of {max_bytes} bytes while read")
    return data


def _check_stat(path: str | Path, info: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _TYPES if test(info.st_mode)), "of an unknown type")
        raise InputFileError(NOT_A_FILE, f"{str(path)!r} is {what}, not a regular file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise InputFileError(
            TOO_LARGE_FILE,
            f"{str(path)!r} is {info.st_size} bytes, over the limit of {max_bytes} bytes (--max-file-bytes)",
        )
