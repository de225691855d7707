"""Parquet files (a Hugging Face dataset's ``data/*.parquet``): one item per row, read with ``pyarrow``.

Listing reads the footer only: the row groups and their row counts, kept as ``ParquetRows``, a sequence of
the file's rows that makes each ``ParquetRow`` when asked (a few integers, however many rows: cheap to hold
and to send to the other torchrun ranks, which tokenize parts of one file). Row ``r`` is read in the process that
tokenizes it, one row group at a time: the last row group read (only the image column and the kept
columns) is cached per process, so a DataLoader worker walking its rows in order reads each group once.

The image column holds encoded image bytes, either as ``binary`` or as the Hugging Face ``Image`` struct
``{bytes, path}``. Without ``TableColumns.image`` it is found: the column the file's Hugging Face metadata
calls an ``Image``, else the only column of either type. A null cell, or a struct whose ``bytes`` is null
(an image stored as a path to elsewhere), is a ``missing_media`` error of that row. ``TableColumns.keep``
columns are copied into the item's ``meta`` as JSON values (dates and other non-JSON values as text).

``pyarrow`` is an optional dependency (``pip install 'tessera-tokenizers[data]'``), imported only here.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from pathlib import Path
from typing import Any

from .containers import MISSING_MEDIA, BrokenContainer, ContainedItem, MemberError, Payload, TableColumns
from .files import TOO_LARGE_FILE, UNREADABLE

INSTALL_HINT = "pip install 'tessera-tokenizers[data]'"


def import_parquet() -> Any:
    """``pyarrow.parquet``, or an ImportError that says how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading Parquet inputs needs pyarrow, which is not installed: {INSTALL_HINT}") from err
    return pq


@dataclass(frozen=True)
class ParquetRow:
    """Row ``row`` of a Parquet file: row ``index`` of row group ``group``."""

    path: Path
    row: int
    group: int
    index: int
    columns: TableColumns  # the image column resolved (never None here)

    @property
    def source(self) -> str:
        return f"{self.path}#{self.row}"

    def read(self, max_bytes: int, max_video_bytes: int | None = None) -> Payload:
        """The row's image bytes (at most ``max_bytes``) and its kept columns (a table holds images only)."""
        table = _row_group(self.path, self.group, (self.columns.image, *self.columns.keep))
        value = table.column(self.columns.image)[self.index].as_py()
        extension = ""
        if isinstance(value, dict):  # the Hugging Face Image struct
            extension = Path(value.get("path") or "").suffix.lstrip(".").lower()
            value = value.get("bytes")
        if value is None:
            raise MemberError(MISSING_MEDIA, f"{self.source}: column {self.columns.image!r} holds no image bytes")
        if len(value) > max_bytes:
            raise MemberError(TOO_LARGE_FILE, f"{self.source!r} is {len(value)} bytes, over the limit of {max_bytes}")
        meta = {name: _json_value(table.column(name)[self.index].as_py()) for name in self.columns.keep}
        return Payload(bytes(value), extension, meta)


@dataclass(frozen=True, eq=False)
class ParquetRows(Sequence[ParquetRow]):
    """The rows of Parquet file ``path`` as ``ParquetRow`` items, in file order, made when indexed (a slice
    gives a list) from the row count of each row group."""

    path: Path
    columns: TableColumns  # the image column resolved
    groups: tuple[int, ...]  # rows in each row group

    @cached_property
    def _starts(self) -> tuple[int, ...]:
        """The number of the first row of each row group."""
        return tuple(accumulate(self.groups[:-1], initial=0))

    def __len__(self) -> int:
        return sum(self.groups)

    def __getitem__(self, index: int | slice) -> ParquetRow | list[ParquetRow]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        row = index + len(self) if index < 0 else index
        if not 0 <= row < len(self):
            raise IndexError(f"row {index} of {self.path}, which has {len(self)} rows")
        group = bisect_right(self._starts, row) - 1  # the last group starting at or before it: never an empty one
        return ParquetRow(self.path, row, group, row - self._starts[group], self.columns)


def list_parquet(path: Path, columns: TableColumns) -> Sequence[ContainedItem]:
    """``ParquetRows``: one ``ParquetRow`` per row of ``path``; a list of one ``BrokenContainer`` if it is not
    a readable Parquet file. Raises ValueError when the image column cannot be found or a named column does
    not exist."""
    pq = import_parquet()
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        return [BrokenContainer(path, UNREADABLE, f"cannot read Parquet file {str(path)!r}: {err}")]
    schema = parquet.schema_arrow
    image = columns.image or detect_image_column(schema, path)
    for name, option in ((image, "--image-column"), *((k, "--keep-columns") for k in columns.keep)):
        if name not in schema.names:
            raise ValueError(f"{path}: no column {name!r} ({option}); its columns are {', '.join(schema.names)}")
    groups = tuple(parquet.metadata.row_group(group).num_rows for group in range(parquet.metadata.num_row_groups))
    return ParquetRows(path, TableColumns(image, columns.keep), groups)


def detect_image_column(schema: Any, path: Path) -> str:
    """The column of ``schema`` that holds the images (see the module docstring); ValueError if none or several."""
    features = _huggingface_features(schema)
    tagged = [n for n in schema.names if isinstance(features.get(n), dict) and features[n].get("_type") == "Image"]
    if tagged:
        return tagged[0]
    candidates = [field.name for field in schema if _holds_bytes(field.type)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ValueError(f"{path}: several columns could hold the images ({', '.join(candidates)}); "
                         "choose one with --image-column")  # fmt: skip
    raise ValueError(f"{path}: no column of image bytes (binary, or a {{bytes, path}} struct) among "
                     f"{', '.join(schema.names)}; choose one with --image-column")  # fmt: skip


def _huggingface_features(schema: Any) -> dict[str, Any]:
    """The ``features`` that the ``datasets`` library stores in a Parquet file's schema metadata, or {}."""
    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        features = info.get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _holds_bytes(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _holds_bytes(kind.field(index).type)
    return False


def _json_value(value: Any) -> Any:
    """``value`` as JSON can store it: dates, decimals and the like become their text."""
    return json.loads(json.dumps(value, default=str))


_last_group: tuple[tuple[str, int, tuple[str, ...]], Any] | None = None  # per process: (what, table)


def _row_group(path: Path, group: int, columns: tuple[str, ...]) -> Any:
    """Row group ``group`` of ``path`` with ``columns``, kept until another one is asked for."""
    global _last_group
    key = (str(path), group, columns)
    if _last_group is None or _last_group[0] != key:
        _last_group = None  # free the previous group before reading the next
        try:
            table = import_parquet().ParquetFile(path).read_row_group(group, columns=list(columns))
        except (OSError, ValueError) as err:
            raise MemberError(UNREADABLE, f"cannot read row group {group} of {str(path)!r}: {err}") from None
        _last_group = (key, table)
    return _last_group[1]
