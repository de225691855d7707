"""Token shards: dtype choice, round trips, the documented layout read with numpy, lazy and atomic I/O, errors,
the dataset over a token folder, and sequences for language models."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from tokenizer import tokens as tokens_module
from tokenizer.tokens import (
    TokenDataset,
    collate_sequences,
    list_shards,
    read_shard,
    shard_name,
    to_sequence,
    token_dtype,
    write_shard,
)


def _grid(shape: tuple[int, ...], vocabulary: int) -> torch.Tensor:
    return torch.randint(0, vocabulary, shape, dtype=torch.int64)


def _assert_round_trip(path: Path, grids: list[torch.Tensor], kinds: list[int]) -> None:
    shard = read_shard(path)
    assert len(shard) == len(grids)
    for i, (grid, kind) in enumerate(zip(grids, kinds, strict=True)):
        got = shard.grid(i)
        assert got.dtype == torch.int64
        assert got.shape == grid.shape
        assert torch.equal(got, grid.to(torch.int64))
        assert shard.kind(i) == kind


# -- dtype ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vocabulary", "dtype"),
    [(1, torch.uint8), (256, torch.uint8), (257, torch.int16), (32768, torch.int16), (32769, torch.int32)],
)
def test_token_dtype_boundaries(vocabulary: int, dtype: torch.dtype) -> None:
    assert token_dtype(vocabulary) == dtype


@pytest.mark.parametrize("vocabulary", [0, -5, 2**31 + 1, 3.0, True])
def test_token_dtype_rejects_bad_vocabulary(vocabulary: object) -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        token_dtype(vocabulary)  # type: ignore[arg-type]


@pytest.mark.parametrize("vocabulary", [256, 257, 32768, 32769, 2**20])
def test_edge_ids_survive_each_dtype(tmp_path: Path, vocabulary: int) -> None:
    grid = torch.tensor([[0, vocabulary - 1, 1], [vocabulary - 2, 0, vocabulary - 1]])
    path = tmp_path / shard_name(0)
    write_shard(path, [grid], [0], {"vocabulary": vocabulary})
    numpy_dtype = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}[token_dtype(vocabulary)]
    assert load_file(path)["tokens"].dtype == numpy_dtype
    _assert_round_trip(path, [grid], [0])


# -- round trips ---------------------------------------------------------------------------------------------


def test_round_trip_mixed_images_and_videos(tmp_path: Path) -> None:
    vocabulary = 1000
    grids = [_grid((7, 5), vocabulary), _grid((3, 4, 6), vocabulary), _grid((1, 1), vocabulary)]
    grids += [_grid((1, 2, 3), vocabulary), _grid((16, 16), vocabulary)]
    grids.append(torch.tensor([[0, 999], [999, 0]], dtype=torch.int32))  # edge ids, another integer dtype
    kinds = [0, 1, 0, 1, 0, 0]
    identity = {"vocabulary": vocabulary, "config_sha256": "abc", "quantizer": "fsq", "downsample": [1, 8, 8]}
    path = tmp_path / shard_name(3)
    write_shard(path, grids, kinds, identity)
    _assert_round_trip(path, grids, kinds)
    shard = read_shard(path)
    assert shard.identity == identity
    assert shard.shape(1) == (3, 4, 6)
    assert shard.grid(-1).tolist() == [[0, 999], [999, 0]]
    with pytest.raises(IndexError):
        shard.grid(6)


def test_round_trip_residual_depth(tmp_path: Path) -> None:
    vocabulary, depth = 300, 3
    grids = [_grid((4, 5, depth), vocabulary), _grid((2, 3, 2, depth), vocabulary), _grid((1, 1, depth), vocabulary)]
    kinds = [0, 1, 0]
    path = tmp_path / shard_name(0)
    write_shard(path, grids, kinds, {"vocabulary": vocabulary, "depth": depth, "quantizer": "residual"})
    _assert_round_trip(path, grids, kinds)
    tensors = load_file(path)
    assert tensors["shapes"].tolist() == [[1, 4, 5, 3], [2, 3, 2, 3], [1, 1, 1, 3]]


def test_empty_shard(tmp_path: Path) -> None:
    path = tmp_path / shard_name(0)
    write_shard(path, [], [], {"vocabulary": 64})
    shard = read_shard(path)
    assert len(shard) == 0
    tensors = load_file(path)
    assert tensors["offsets"].tolist() == [0]
    assert tensors["shapes"].shape == (0, 4)
    assert tensors["tokens"].shape == (0,)


def test_layout_is_exact(tmp_path: Path) -> None:
    """The tensors hold exactly what the docs say, for a small hand-written case."""
    path = tmp_path / shard_name(0)
    image = torch.tensor([[1, 2, 3], [4, 5, 6]])
    video = torch.tensor([[[7, 8]], [[9, 0]]])  # [t=2, h=1, w=2]
    write_shard(path, [image, video], [0, 1], {"vocabulary": 10})
    tensors = load_file(path)
    assert tensors["tokens"].dtype == np.uint8
    assert tensors["tokens"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert tensors["offsets"].dtype == np.int64 and tensors["offsets"].tolist() == [0, 6, 10]
    assert tensors["shapes"].dtype == np.int64 and tensors["shapes"].tolist() == [[1, 2, 3, 1], [2, 1, 2, 1]]
    assert tensors["kinds"].dtype == np.uint8 and tensors["kinds"].tolist() == [0, 1]
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
    assert metadata == {"format": "tessera-tokens", "version": "1", "tokenizer": '{"vocabulary": 10}', "items": "2"}


@pytest.mark.parametrize("depth", [1, 2])
def test_readable_with_plain_numpy_by_the_documented_rules(tmp_path: Path, depth: int) -> None:
    """Reconstruct every grid following only the module docstring, without this module's reader."""
    vocabulary = 40000
    trailing = (depth,) if depth > 1 else ()
    shapes = [(3, 5), (2, 4, 3), (1, 7), (1, 1, 1)]
    grids = [_grid(shape + trailing, vocabulary) for shape in shapes]
    kinds = [0, 1, 0, 1]
    path = tmp_path / shard_name(0)
    write_shard(
        path, grids, kinds, {"vocabulary": vocabulary, "depth": depth} if depth > 1 else {"vocabulary": vocabulary}
    )

    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "tessera-tokens" and meta["version"] == "1"
    identity = json.loads(meta["tokenizer"])
    assert identity["vocabulary"] == vocabulary
    assert tensors["tokens"].dtype == np.int32  # vocabulary > 32768
    for i in range(int(meta["items"])):
        t, h, w, d = tensors["shapes"][i].tolist()
        shape = ((h, w) if tensors["kinds"][i] == 0 else (t, h, w)) + ((d,) if identity.get("depth", 1) > 1 else ())
        start, stop = tensors["offsets"][i], tensors["offsets"][i + 1]
        grid = tensors["tokens"][start:stop].astype(np.int64).reshape(shape)
        np.testing.assert_array_equal(grid, grids[i].numpy())


# -- lazy and atomic I/O -------------------------------------------------------------------------------------


class _RecordingHandle:
    """Wraps a safe_open handle and records how the token buffer is read."""

    def __init__(self, handle: object, log: list[tuple[str, object]]) -> None:
        self._handle, self._log = handle, log

    def get_tensor(self, name: str) -> torch.Tensor:
        self._log.append(("get_tensor", name))
        return self._handle.get_tensor(name)

    def get_slice(self, name: str) -> object:
        log, inner = self._log, self._handle.get_slice(name)

        class _Slice:
            def __getitem__(self, index: slice) -> torch.Tensor:
                log.append(("slice", (name, index.start, index.stop)))
                return inner[index]

            def __getattr__(self, attribute: str) -> object:
                return getattr(inner, attribute)

        return _Slice()

    def __getattr__(self, attribute: str) -> object:
        return getattr(self._handle, attribute)


def test_reading_one_item_reads_only_its_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grids = [_grid((8, 8), 500), _grid((2, 3, 5), 500), _grid((4, 4), 500)]
    path = tmp_path / shard_name(0)
    write_shard(path, grids, [0, 1, 0], {"vocabulary": 500})
    log: list[tuple[str, object]] = []
    real_open = tokens_module.safe_open
    monkeypatch.setattr(tokens_module, "safe_open", lambda *a, **k: _RecordingHandle(real_open(*a, **k), log))
    shard = read_shard(path)
    assert ("get_tensor", "tokens") not in log
    log.clear()
    assert torch.equal(shard.grid(1), grids[1])
    assert log == [("slice", ("tokens", 64, 94))]


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / shard_name(0)

    def broken_save(*args: object, **kwargs: object) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(tokens_module, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_shard(path, [_grid((2, 2), 9)], [0], {"vocabulary": 9})
    assert list(tmp_path.iterdir()) == []


def test_failure_after_temp_file_is_written_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file exists (a dot-name ending .tmp, beside the shard) when fsync fails; it is removed."""
    path = tmp_path / shard_name(0)
    seen: list[list[str]] = []

    def broken_fsync(fd: int) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        write_shard(path, [_grid((2, 2), 9)], [0], {"vocabulary": 9})
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".") and seen[0][0].endswith(".tmp")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_whole_shard(tmp_path: Path) -> None:
    path = tmp_path / shard_name(0)
    write_shard(path, [_grid((9, 9), 9)], [0], {"vocabulary": 9})
    grid = _grid((2, 2, 2), 9)
    write_shard(path, [grid], [1], {"vocabulary": 9})
    _assert_round_trip(path, [grid], [1])
    assert [p.name for p in tmp_path.iterdir()] == [shard_name(0)]


def test_equal_shards_are_equal_bytes(tmp_path: Path) -> None:
    """safetensors orders metadata by a randomly seeded hash map; the shard must not depend on it (the pipeline
    promises identical output whatever the batch size or worker count)."""
    grids = [_grid((3, 4), 50), _grid((2, 2, 2), 50)]
    written = set()
    for attempt in range(20):
        identity = {"vocabulary": 50, "quantizer": "fsq", "levels": [5, 10], "config_sha256": "ab"}
        if attempt % 2:  # the identity's key order must not matter either
            identity = dict(reversed(identity.items()))
        path = tmp_path / shard_name(attempt)
        write_shard(path, grids, [0, 1], identity)
        written.add(path.read_bytes())
    assert len(written) == 1
    _assert_round_trip(tmp_path / shard_name(0), grids, [0, 1])


def test_shard_names_and_listing(tmp_path: Path) -> None:
    assert shard_name(0) == "tokens-00000.safetensors"
    assert shard_name(123456) == "tokens-123456.safetensors"
    for index in (2, 0, 10):
        write_shard(tmp_path / shard_name(index), [], [], {"vocabulary": 2})
    (tmp_path / ".tokens-00003.safetensors.1.tmp").write_bytes(b"")
    (tmp_path / "manifest.jsonl").write_text("")
    assert [p.name for p in list_shards(tmp_path)] == [shard_name(0), shard_name(2), shard_name(10)]
    assert list_shards(tmp_path / "missing") == []


# -- bad inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grids", "kinds", "identity", "error", "match"),
    [
        ([torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 10]])], [0, 0], {"vocabulary": 10}, ValueError,
         r"grids\[1\] holds id 10"),
        ([torch.tensor([[-1, 0]])], [0], {"vocabulary": 10}, ValueError, r"grids\[0\] holds id -1"),
        ([torch.zeros(2, 2)], [0], {"vocabulary": 10}, TypeError, r"grids\[0\].*integer dtype"),
        ([torch.zeros(2, 2, dtype=torch.bool)], [0], {"vocabulary": 10}, TypeError, r"grids\[0\].*integer dtype"),
        ([torch.zeros(2, 2, 2, dtype=torch.long)], [0], {"vocabulary": 10}, ValueError, r"grids\[0\].*\[h, w\]"),
        ([torch.zeros(2, 2, dtype=torch.long)], [1], {"vocabulary": 10}, ValueError, r"grids\[0\].*\[t, h, w\]"),
        ([torch.zeros(2, 2, dtype=torch.long)], [2], {"vocabulary": 10}, ValueError, r"kinds\[0\]"),
        ([torch.zeros(2, 2, 4, dtype=torch.long)], [0], {"vocabulary": 10, "depth": 3}, ValueError,
         r"grids\[0\].*\[h, w, 3\]"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0], {"vocabulary": 10, "depth": 3}, ValueError, r"grids\[0\]"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0], {"levels": [8, 8]}, ValueError, "vocabulary"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0], {"vocabulary": 0}, ValueError, r"identity\['vocabulary'\]"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0], {"vocabulary": 10, "depth": 0}, ValueError, "depth"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0, 0], {"vocabulary": 10}, ValueError, "kinds"),
        ([np.zeros((2, 2), dtype=np.int64)], [0], {"vocabulary": 10}, TypeError, r"grids\[0\].*torch.Tensor"),
        ([torch.zeros(2, 2, dtype=torch.long)], [0], {"vocabulary": 10, "hash": b"x"}, ValueError, "JSON"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_culprit(
    tmp_path: Path, grids: list, kinds: list, identity: dict, error: type[Exception], match: str
) -> None:
    path = tmp_path / shard_name(0)
    with pytest.raises(error, match=match):
        write_shard(path, grids, kinds, identity)
    assert list(tmp_path.iterdir()) == []


def _valid_tensors() -> dict[str, torch.Tensor]:
    return {
        "tokens": torch.arange(6, dtype=torch.uint8),
        "offsets": torch.tensor([0, 6]),
        "shapes": torch.tensor([[1, 2, 3, 1]]),
        "kinds": torch.tensor([0], dtype=torch.uint8),
    }


_VALID_METADATA = {"format": "tessera-tokens", "version": "1", "tokenizer": '{"vocabulary": 10}', "items": "1"}


@pytest.mark.parametrize(
    ("tensors", "metadata", "match"),
    [
        ({"weight": torch.zeros(3)}, None, "not a tessera-tokens"),
        (_valid_tensors(), {**_VALID_METADATA, "format": "other"}, "not a tessera-tokens"),
        (_valid_tensors(), {**_VALID_METADATA, "version": "2"}, "unsupported tessera-tokens version '2'"),
        (_valid_tensors(), {**_VALID_METADATA, "tokenizer": "{not json"}, "invalid tessera-tokens metadata"),
        (_valid_tensors(), {**_VALID_METADATA, "tokenizer": "{}"}, "invalid tessera-tokens metadata"),
        (_valid_tensors(), {**_VALID_METADATA, "items": "2"}, "offsets"),
        ({**_valid_tensors(), "offsets": torch.tensor([0, 5])}, _VALID_METADATA, "inconsistent offsets"),
        ({**_valid_tensors(), "shapes": torch.tensor([[1, 2, 2, 1]])}, _VALID_METADATA, "inconsistent offsets"),
        ({**_valid_tensors(), "shapes": torch.tensor([[2, 1, 3, 1]])}, _VALID_METADATA, "inconsistent shapes"),
        ({**_valid_tensors(), "tokens": torch.arange(6, dtype=torch.int16)}, _VALID_METADATA, "tokens must be"),
        ({**_valid_tensors(), "kinds": torch.tensor([3], dtype=torch.uint8)}, _VALID_METADATA, "kinds"),
        ({k: v for k, v in _valid_tensors().items() if k != "kinds"}, _VALID_METADATA, "lacks tensors"),
    ],
)
def test_foreign_or_inconsistent_file_is_rejected(
    tmp_path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, match: str
) -> None:
    path = tmp_path / "tokens-00000.safetensors"
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match=match) as caught:
        read_shard(path)
    assert str(path) in str(caught.value)


def test_valid_hand_written_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / shard_name(0)
    save_file(_valid_tensors(), path, metadata=_VALID_METADATA)
    assert read_shard(path).grid(0).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_corrupt_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / shard_name(0)
    write_shard(path, [_grid((4, 4), 10)], [0], {"vocabulary": 10})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="not a readable safetensors file") as caught:
        read_shard(path)
    assert str(path) in str(caught.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match=str(garbage)):
        read_shard(garbage)


# -- the dataset ---------------------------------------------------------------------------------------------


def _token_folder(folder: Path) -> list[dict]:
    """Two shards and a manifest that interleaves them; returns the rows with their grids under "expected"."""
    identity = {"vocabulary": 700, "quantizer": "vq"}
    first = [_grid((3, 4), 700), _grid((2, 2, 5), 700)]
    second = [_grid((6, 1), 700), _grid((5, 5), 700), _grid((1, 3, 3), 700)]
    write_shard(folder / shard_name(0), first, [0, 1], identity)
    write_shard(folder / shard_name(1), second, [0, 0, 1], identity)
    rows = [
        {
            "source": "b.png",
            "shard": shard_name(1),
            "position": 1,
            "shape": [5, 5],
            "fingerprint": "f1",
            "kind": "image",
        },
        {"source": "a.mp4", "shard": shard_name(0), "position": 1, "shape": [2, 2, 5], "fingerprint": "f2"},
        {"source": "c.png", "shard": shard_name(1), "position": 0, "shape": [6, 1], "extra": {"k": [1, 2]}},
        {"source": "d.png", "shard": shard_name(0), "position": 0, "shape": [3, 4]},
        {"source": "e.mp4", "shard": shard_name(1), "position": 2, "shape": [1, 3, 3]},
    ]
    lines = [json.dumps(row) for row in rows]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    grids = {(shard_name(0), i): g for i, g in enumerate(first)} | {(shard_name(1), i): g for i, g in enumerate(second)}
    return [{**row, "expected": grids[(row["shard"], row["position"])]} for row in rows]


def _check_item(item: dict, row: dict) -> None:
    expected = row["expected"]
    assert item["tokens"].dtype == torch.int64
    assert torch.equal(item["tokens"], expected)
    assert {k: v for k, v in item.items() if k != "tokens"} == {k: v for k, v in row.items() if k != "expected"}


def test_dataset_follows_manifest_and_keeps_extra_keys(tmp_path: Path) -> None:
    rows = _token_folder(tmp_path)
    dataset = TokenDataset(tmp_path)
    assert len(dataset) == len(rows)
    assert dataset.vocabulary == 700
    assert dataset.identity == {"vocabulary": 700, "quantizer": "vq"}
    for i, row in enumerate(rows):
        _check_item(dataset[i], row)


def test_dataset_pickles_without_open_files(tmp_path: Path) -> None:
    rows = _token_folder(tmp_path)
    dataset = TokenDataset(tmp_path)
    _check_item(dataset[0], rows[0])  # opens a shard
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._shards == {}
    _check_item(clone[1], rows[1])
    shard = pickle.loads(pickle.dumps(read_shard(tmp_path / shard_name(1))))
    assert torch.equal(shard.grid(2), rows[4]["expected"])


def test_dataset_in_dataloader_workers(tmp_path: Path) -> None:
    rows = _token_folder(tmp_path)
    dataset = TokenDataset(tmp_path)
    _ = dataset[0]  # handles opened in the parent must not leak into workers
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    items = list(loader)
    assert len(items) == len(rows)
    for item, row in zip(items, rows, strict=True):
        _check_item(item, row)


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "manifest.jsonl")):
        TokenDataset(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"source": "a", "shard": shard_name(0), "position": 0}) + "\n")
    with pytest.raises(ValueError, match=r"manifest.jsonl:1: row lacks \['shape'\]"):
        TokenDataset(tmp_path)
    write_shard(tmp_path / shard_name(0), [_grid((2, 2), 5)], [0], {"vocabulary": 5})
    row = {"source": "a", "shard": shard_name(0), "position": 0, "shape": [2, 3]}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"shape \[2, 3\]"):
        TokenDataset(tmp_path)[0]


def test_dataset_rejects_shards_from_different_tokenizers(tmp_path: Path) -> None:
    write_shard(tmp_path / shard_name(0), [_grid((2, 2), 5)], [0], {"vocabulary": 5})
    write_shard(tmp_path / shard_name(1), [_grid((2, 2), 5)], [0], {"vocabulary": 6})
    rows = [{"source": str(i), "shard": shard_name(i), "position": 0, "shape": [2, 2]} for i in range(2)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = TokenDataset(tmp_path)
    _ = dataset[0]
    with pytest.raises(ValueError, match="another tokenizer"):
        dataset[1]


# -- sequences -----------------------------------------------------------------------------------------------


def test_to_sequence_order_offset_and_specials() -> None:
    video = torch.arange(2 * 3 * 2 * 2, dtype=torch.int16).reshape(2, 3, 2, 2)  # [t, h, w, depth]
    assert to_sequence(video).tolist() == list(range(24))
    image = torch.tensor([[5, 6, 7], [8, 9, 10]], dtype=torch.uint8)
    sequence = to_sequence(image, bos=1, eos=2, offset=100)
    assert sequence.dtype == torch.int64
    assert sequence.tolist() == [1, 105, 106, 107, 108, 109, 110, 2]
    assert to_sequence(image, eos=0).tolist() == [5, 6, 7, 8, 9, 10, 0]
    assert to_sequence(image, bos=3).tolist() == [3, 5, 6, 7, 8, 9, 10]
    assert to_sequence(image.t()).tolist() == [5, 8, 6, 9, 7, 10]  # a non-contiguous view, still row-major
    with pytest.raises(TypeError, match="integer"):
        to_sequence(torch.zeros(2, 2))


def test_collate_sequences_pads_right() -> None:
    batch = [torch.tensor([4, 5, 6]), torch.tensor([7]), torch.tensor([], dtype=torch.int64)]
    tokens, mask = collate_sequences(batch, pad=-1)
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool
    assert tokens.tolist() == [[4, 5, 6], [7, -1, -1], [-1, -1, -1]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    tokens, mask = collate_sequences([], pad=0)
    assert tokens.shape == (0, 0) and mask.shape == (0, 0)
    with pytest.raises(ValueError, match=r"batch\[0\]"):
        collate_sequences([torch.zeros(2, 2, dtype=torch.long)], pad=0)
