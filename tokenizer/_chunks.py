"""How the inputs of ``tokenizer encode`` become chunks (one token shard each), and which rank does each.

Walking the sorted inputs:

- consecutive loose files are cut into chunks of ``shard_size`` files; chunk ``k`` (its number among all
  chunks) goes to rank ``k mod W``;
- a container (a tar shard or a Parquet file; ``data.containers``) at position ``j`` of the input list has its
  items cut into chunks of ``shard_size`` of its own, never shared with another input, and all of them go to
  rank ``j mod W``: a rank reads whole shards, front to back.

Listing is split the same way: rank ``r`` lists only the containers it tokenizes, and the ranks exchange
just the item counts, from which each numbers the chunks alike. The numbering depends on the inputs and
``shard_size`` only, so the output is the same whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._distributed import all_gather_object
from .data.containers import ContainedItem, TableColumns, is_container, list_container

_RAISED = {"ValueError": ValueError, "ImportError": ImportError}  # what listing raises, rebuilt on every rank


@dataclass(frozen=True)
class Chunk:
    owner: int  # rank owner % world tokenizes it
    size: int  # items
    items: list[Path | ContainedItem] | None  # None on the ranks that did not list its container


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
    listed: dict[int, list[ContainedItem]] = {}
    failure: tuple[str, str] | None = None
    for j, path in enumerate(inputs):
        if is_container(path) and j % world == rank:
            try:
                listed[j] = list_container(path, columns)
            except (ValueError, ImportError) as err:
                failure = ("ImportError" if isinstance(err, ImportError) else "ValueError", str(err))
                break
    counts: dict[int, int] = {}
    for their_counts, their_failure in all_gather_object(({j: len(v) for j, v in listed.items()}, failure)):
        if their_failure is not None:
            raise _RAISED[their_failure[0]](their_failure[1])
        counts.update(their_counts)

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
        for start in range(0, counts[j], shard_size):
            size = min(shard_size, counts[j] - start)
            chunks.append(Chunk(j, size, None if items is None else list(items[start : start + size])))
    cut_loose()
    return Plan(chunks, len(counts), sum(c.size for c in chunks))
