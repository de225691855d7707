"""plan_chunks over three simulated ranks (all_gather_object monkeypatched, listings faked) and ParquetRows indexing."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tokenizer import _chunks
from tokenizer._chunks import plan_chunks
from tokenizer.data.containers import TableColumns
from tokenizer.data.parquet import ParquetRow, ParquetRows

COLUMNS = TableColumns("image")
# row groups of the fake Parquet files: empty groups inside and at the end, a file of 0 rows, one of 2 rows
GROUPS = {"p.parquet": (3, 0, 4, 0, 2), "empty.parquet": (), "q.parquet": (2,)}
TAR_ITEMS = 5
INPUTS = [Path(n) for n in ("a.png", "b.png", "t.tar", "p.parquet", "empty.parquet", "q.parquet", "c.png")]
SHARD = 2


def _list_container(path: Path, columns: TableColumns):
    if path.suffix == ".tar":
        return [f"{path}#{i}" for i in range(TAR_ITEMS)]
    return ParquetRows(path, COLUMNS, GROUPS[path.name])


def _plans(monkeypatch: pytest.MonkeyPatch, world: int) -> list[_chunks.Plan]:
    """Every rank's plan: a first pass records what each rank contributes to the all-gather, a second pass gives
    every rank all the contributions (pickled, as torch.distributed sends them)."""
    monkeypatch.setattr(_chunks, "list_container", _list_container)
    sent: dict[int, object] = {}

    class Gathered(Exception):
        pass

    for rank in range(world):

        def record(value, rank=rank):
            sent[rank] = pickle.dumps(value)
            raise Gathered

        monkeypatch.setattr(_chunks, "all_gather_object", record)
        with pytest.raises(Gathered):
            plan_chunks(INPUTS, SHARD, COLUMNS, world, rank)
    monkeypatch.setattr(_chunks, "all_gather_object", lambda value: [pickle.loads(sent[r]) for r in range(world)])
    return [plan_chunks(INPUTS, SHARD, COLUMNS, world, rank) for rank in range(world)]


def _row(name: str, row: int) -> ParquetRow:
    """Row ``row`` of a fake file, its group and place in the group found by walking the group sizes."""
    index = row
    for group, rows in enumerate(GROUPS[name]):
        if index < rows:
            return ParquetRow(Path(name), row, group, index, COLUMNS)
        index -= rows
    raise AssertionError("row past the end")


def _expected_chunks() -> list[tuple[int, list]]:
    """``(owner, items)`` of every chunk, written out from the rules: loose chunk k -> rank k, a tar at input j
    -> rank j, chunk n of a Parquet file at input j -> rank j + n (all mod W)."""
    tar = [f"t.tar#{i}" for i in range(TAR_ITEMS)]
    p = [_row("p.parquet", r) for r in range(9)]
    q = [_row("q.parquet", r) for r in range(2)]
    return [
        (0, [Path("a.png"), Path("b.png")]),  # loose chunk 0
        (2, tar[0:2]),  # t.tar is input 2: all its chunks
        (2, tar[2:4]),
        (2, tar[4:5]),
        (3, p[0:2]),  # p.parquet is input 3: chunk n -> 3 + n
        (4, p[2:4]),
        (5, p[4:6]),
        (6, p[6:8]),
        (7, p[8:9]),
        # empty.parquet (input 4): no chunk
        (5, q),  # q.parquet is input 5: one chunk, fewer than the ranks
        (10, [Path("c.png")]),  # loose: its number among all chunks
    ]


@pytest.mark.parametrize("world", [1, 3])
def test_every_rank_plans_the_same_chunks_and_holds_only_its_own(monkeypatch, world):
    expected = _expected_chunks()
    for rank, plan in enumerate(_plans(monkeypatch, world)):
        assert (plan.containers, plan.items) == (4, 2 + TAR_ITEMS + 9 + 0 + 2 + 1)
        assert [(c.owner, c.size) for c in plan.chunks] == [(owner, len(items)) for owner, items in expected]
        for chunk, (owner, items) in zip(plan.chunks, expected):
            loose = isinstance(items[0], Path)
            mine = owner % world == rank
            assert chunk.items == (items if mine or loose else None)


def test_three_ranks_split_a_parquet_file_and_skip_the_empty_one(monkeypatch):
    plans = _plans(monkeypatch, world=3)
    parquet_rows = {r: [i.row for c in plan.chunks if c.items for i in c.items if isinstance(i, ParquetRow)]
                    for r, plan in enumerate(plans)}  # fmt: skip
    # p.parquet's chunks 0..4 go to ranks 0, 1, 2, 0, 1; q.parquet's single chunk to rank 5 mod 3 = 2
    assert parquet_rows == {0: [0, 1, 6, 7], 1: [2, 3, 8], 2: [4, 5, 0, 1]}
    assert not any(isinstance(i, ParquetRow) and i.path.name == "empty.parquet"
                   for plan in plans for c in plan.chunks for i in c.items or ())  # fmt: skip


def test_parquet_rows_index_like_a_list():
    rows = ParquetRows(Path("p.parquet"), COLUMNS, GROUPS["p.parquet"])
    every = [_row("p.parquet", r) for r in range(9)]
    assert len(rows) == 9 and [rows[i] for i in range(9)] == every
    assert [rows[-i] for i in range(1, 10)] == every[::-1]
    for index, piece in [(slice(None), every), (slice(7, 100), every[7:]), (slice(None, None, -3), every[::-3]),
                         (slice(-4, -1), every[-4:-1]), (slice(5, 2), [])]:  # fmt: skip
        assert rows[index] == piece
    for index in (9, -10):
        with pytest.raises(IndexError, match=rf"row {index} of p\.parquet, which has 9 rows"):
            rows[index]
    empty = ParquetRows(Path("empty.parquet"), COLUMNS, ())
    assert len(empty) == 0 and empty[:] == []
    with pytest.raises(IndexError):
        empty[0]
