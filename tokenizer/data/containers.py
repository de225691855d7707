"""Inputs that hold many items: WebDataset tar shards and Parquet files, listed into one item per sample.

A loose file is one input item; a container file is expanded into items that the pipeline treats the same
way (chunks, errors, resume, ranks), each with a ``source`` naming the container and the sample:

- ``shard.tar#key``: the members of a WebDataset tar that share a key (``dir/key.jpg``, ``dir/key.json``, ...;
  the key is the member path up to the first dot of its file name), in the order the tar holds them. The
  media is the first member with an image or video extension (a video is streamed from its place in the
  tar); ``.json``, ``.txt`` and ``.cls`` members become the item's ``meta`` (see ``tars``).
- ``file.parquet#row``: row ``row`` of a Parquet file (a Hugging Face dataset's files), its image in one
  column (bytes, or a ``{bytes, path}`` struct) and chosen other columns in ``meta`` (see ``parquet``).

Listing reads only headers (tar) or the footer (Parquet), never the payloads; an item's bytes are read when
the item is, in a DataLoader worker. A container that cannot be listed at all becomes one ``BrokenContainer``
item, so its reason lands in ``errors.jsonl`` like a bad file's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .byte_range import FileRange
from .files import InputFileError, check_input_file

TAR_EXTENSIONS = frozenset({".tar"})
PARQUET_EXTENSIONS = frozenset({".parquet"})

MISSING_MEDIA = "missing_media"  # error kind: a sample without an image (a key group of only .json/.txt, a null cell)


@dataclass(frozen=True)
class TableColumns:
    """Which Parquet columns are read: the image (None: detected) and the ones copied into ``meta``."""

    image: str | None = None
    keep: tuple[str, ...] = ()


@dataclass
class Payload:
    """What one item of a container holds: the media bytes, their extension (``"jpg"``) and its metadata.

    A video member is not read here: ``video`` says where it lies in the container (``data`` is then empty),
    and the video reader streams it from there."""

    data: bytes
    extension: str
    meta: dict[str, Any] = field(default_factory=dict)
    video: FileRange | None = None


class MemberError(ValueError):
    """An item of a container that cannot be read; ``kind`` is the one recorded in ``errors.jsonl``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ContainedItem(Protocol):
    """One item of a container: where it comes from, and how to read it (in any process)."""

    @property
    def source(self) -> str: ...  # "shard.tar#key", "file.parquet#row", or the container path

    @property
    def path(self) -> Path: ...  # the container file (its size and mtime decide whether a shard is redone)

    def read(self, max_bytes: int, max_video_bytes: int | None = None) -> Payload:
        """The item's media and metadata; raises ``MemberError`` (or ``InputFileError``) when it cannot.
        ``max_bytes`` bounds an image, ``max_video_bytes`` (None: ``max_bytes``) a video."""
        ...


@dataclass(frozen=True)
class BrokenContainer:
    """A container that could not be listed: reading it raises the reason, under its own path."""

    path: Path
    kind: str
    error: str

    @property
    def source(self) -> str:
        return str(self.path)

    def read(self, max_bytes: int, max_video_bytes: int | None = None) -> Payload:
        raise MemberError(self.kind, self.error)


def is_container(path: str | Path) -> bool:
    """Whether ``path`` is expanded into items (by extension): a ``.tar`` or ``.parquet`` file."""
    suffix = Path(path).suffix.lower()
    return suffix in TAR_EXTENSIONS or suffix in PARQUET_EXTENSIONS


def list_container(path: Path, columns: TableColumns) -> Sequence[ContainedItem]:
    """The items of container ``path`` in their stored order (a Parquet file's as ``ParquetRows``).

    A path that is not a regular file, or a file that is not a tar / Parquet file at all, gives one
    ``BrokenContainer``. Raises ``ValueError`` for a Parquet file without the asked columns (a wrong
    argument, not a bad file) and ``ImportError`` when Parquet support is not installed.
    """
    try:
        check_input_file(path, None)  # a FIFO named x.tar is never opened
    except InputFileError as err:
        return [BrokenContainer(path, err.kind, str(err))]
    if path.suffix.lower() in TAR_EXTENSIONS:
        from .tars import list_tar

        return list_tar(path)
    from .parquet import list_parquet

    return list_parquet(path, columns)


def parse_meta(extension: str, data: bytes, source: str) -> Any:
    """A metadata member's value: ``json`` parsed, ``txt`` as text, ``cls`` as an integer when it is one."""
    text = data.decode("utf-8", errors="replace")
    if extension == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise MemberError("unreadable", f"{source}: its .json member is not JSON ({err})") from None
    if extension == "cls":
        text = text.strip()
        try:
            return int(text)
        except ValueError:
            return text
    return text
