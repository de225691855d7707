"""How the inputs of ``tokenizer encode`` become chunks (one token shard each), and which rank does each.

Walking the sorted inputs:

- consecutive loose files are cut into chunks of ``shard_size`` files; chunk ``k`` (its number among all
  chunks) goes to rank ``k mod W``;
- a container (a tar shard or a Parquet file; ``data.containers``) at position ``j`` of the input list has its
  items cut into chunks of ``shard_size`` of its own, never shared with another input. All the chunks of a
  tar go to rank ``j mod W`` (a tar is read front to back: a rank reads whole shards); chunk ``n`` of a
  Parquet file goes to rank ``(j + n) mod W``, so the ranks share even a single Parquet file, each reading
  only the row groups of its own chunks (a row group that straddles two chunks is read by both ranks).

Listing is split by input: rank ``r`` lists the containers ``j`` with ``j mod W = r``, and the ranks exchange
the item counts, plus each Parquet file's ``ParquetRows`` (its row-group sizes: a few integers), from which
every rank makes the rows of its own chunks. The numbering depends on the inputs and ``shard_size`` only, so
the output is the same whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._distributed import all_gather_object
from .data.containers import ContainedItem, TableColumns, is_container, list_container
from .data.parquet import ParquetRows

_RAISED = {"ValueError": ValueError, "ImportError": ImportError}  # what listing raises, rebuilt on every rank


@dataclass(frozen=True)
class Chunk:
    owner: int  # rank owner % world tokenizes it
    size: int  # items
    items: list[Path | ContainedItem] | None  # a container's: None on the ranks that do not tokenize it


@dataclass(frozen=True)
class Plan:
    chunks: list[Chunk]
    containers: int  # inputs that are tar shards or Parquet files
    items: int  # loose files plus the items of every container


def plan_chunks(inputs: Sequence[Path], shard_size: int, columns: TableColumns, world: int = 1, rank: int = 0) -> Plan:
    """The chunks of ``inputs`` (see the module docstring); a collective call under torchrun.

    Raises ``ValueError`` (a Parquet file without the asked columns) or ``ImportError`` (no pyarrow) on every
    rank when any rank's listing does.
    """
    listed: dict[int, Sequence[ContainedItem]] = {}
    failure: tuple[str, str] | None = None
    for j, path in enumerate(inputs):
        if is_container(path) and j % world == rank:
            try:
                listed[j] = list_container(path, columns)
            except (ValueError, ImportError) as err:
                failure = ("ImportError" if isinstance(err, ImportError) else "ValueError", str(err))
                break
    counts: dict[int, int] = {}
    shared = {j: rows for j, rows in listed.items() if isinstance(rows, ParquetRows)}
    for their_counts, their_rows, their_failure in all_gather_object(
        ({j: len(v) for j, v in listed.items()}, shared, failure)
    ):
        if their_failure is not None:
            raise _RAISED[their_failure[0]](their_failure[1])
        counts.update(their_counts)
        listed.update(their_rows)

    chunks: list[Chunk] = []
    loose: list[Path] = []

    def cut_loose() -> None:
        for start in range(0, len(loose), shard_size):
            part: list[Path | ContainedItem] = list(loose[start : start + shard_size])
            chunks.append(Chunk(len(chunks), len(part), part))
        loose.clear()

    for j, path in enumerate(inputs):
        if not is_container(path):
            loose.append(Path(path))
            continue
        cut_loose()
        items = listed.get(j)
        split = isinstance(items, ParquetRows)  # every rank holds them: chunk n goes to rank j + n
        for n, start in enumerate(range(0, counts[j], shard_size)):
            size = min(shard_size, counts[j] - start)
            owner = j + n if split else j
            part = list(items[start : start + size]) if items is not None and owner % world == rank else None
            chunks.append(Chunk(owner, size, part))
    cut_loose()
    return Plan(chunks, len(counts), sum(c.size for c in chunks))
