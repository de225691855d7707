"""A byte range of a file, read as a file of its own: a video member of a tar shard, decoded in place.

A WebDataset shard stores each member's bytes contiguously, so a video inside it is the range
``[offset, offset + size)`` of the tar. ``FileRange`` names such a range; ``FileRange.open()`` gives a
read-only, seekable file object whose position 0 is the range's first byte and whose end is the range's
end, which PyAV (``av.open``) reads like a file on disk. Nothing is copied into memory or onto disk: a
multi-gigabyte video member is streamed, seek by seek, straight from the shard.

A ``FileRange`` is a small frozen value (a path and two integers), so it travels from a DataLoader worker to
the main process; each process opens its own file descriptor.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class FileRange:
    """Bytes ``offset .. offset + size - 1`` of ``path``, called ``name`` in messages (``shard.tar#key.mp4``)."""

    path: Path
    offset: int
    size: int
    name: str

    def __str__(self) -> str:  # what error messages print, as they print a path
        return self.name

    def open(self) -> BinaryIO:
        """A read-only, seekable file object over the range (close it when done)."""
        return io.BufferedReader(_RangeFile(self), buffer_size=1 << 16)


def open_binary(source: str | Path | FileRange) -> BinaryIO:
    """``source`` opened for reading: a file on disk, or a ``FileRange`` of one."""
    return source.open() if isinstance(source, FileRange) else open(source, "rb")


class _RangeFile(io.RawIOBase):
    """The raw reader behind ``FileRange.open``: reads never pass the range's end (a range that runs past the
    end of its file reads short there, as a truncated file does)."""

    def __init__(self, source: FileRange) -> None:
        self._file = open(source.path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self._start, self._size, self._position = source.offset, source.size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise OSError(f"cannot seek to {base + offset}: before the start of the range")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        self._file.seek(self._start + self._position)
        count = self._file.readinto(memoryview(buffer)[:wanted]) or 0
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
