"""Token folders from elsewhere are untrusted input: every bad shard, id or manifest row is a ``ValueError``
naming the file, found without allocating by what the file claims (issue 13, item 6).

Memory is bounded with ``tests._memory.memory_limit``: an allocation above the bound fails at once."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from tests._memory import MiB, memory_limit
from tokenizer.info import CodeTally, describe_tokens
from tokenizer.tokens import TokenDataset, read_shard, shard_name, token_dtype, write_shard

BOUND = 256 * MiB  # far above what these tiny folders need, far below a histogram of 2**31 codes (17 GB)


def _write_manifest(folder: Path, rows: list[Any]) -> None:
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _raw_shard(path: Path, tensors: dict[str, torch.Tensor], identity: Any, items: Any = None) -> None:
    """A shard written by hand, bypassing ``write_shard``'s checks (as a foreign or corrupted file would be)."""
    metadata = {
        "format": "tessera-tokens",
        "version": "1",
        "tokenizer": json.dumps(identity),
        "items": str(len(tensors["kinds"]) if items is None else items),
    }
    save_file(tensors, path, metadata=metadata)


# -- a huge vocabulary -------------------------------------------------------------------------------------


def test_info_of_a_vocabulary_of_2_31_allocates_by_the_data(tmp_path: Path) -> None:
    vocabulary = 2**31  # the largest the format allows (int32 ids); a dense int64 histogram would take 17 GB
    top = vocabulary - 1
    grids = [torch.tensor([[top, 5, top], [5, top, 0]]), torch.tensor([[7, top]])]
    identity = {"vocabulary": vocabulary, "quantizer": "vq", "downsample": [1, 8, 8]}
    write_shard(tmp_path / shard_name(0), grids, [0, 0], identity)
    rows = [
        {"source": f"{i}.png", "shard": shard_name(0), "position": i, "shape": list(g.shape), "kind": "image"}
        for i, g in enumerate(grids)
    ]
    _write_manifest(tmp_path, rows)
    with memory_limit(BOUND):
        text = describe_tokens(tmp_path)
    codes = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert [(int(code), share) for code, share, _ in codes] == [
        (top, "50.00%"),
        (5, "25.00%"),
        (0, "12.50%"),
        (7, "12.50%"),
    ]
    assert f"vocabulary     {vocabulary}; 4 codes used" in text
    assert "tokens         8" in text
    entropy = -sum(p * math.log2(p) for p in (0.5, 0.25, 0.125, 0.125))
    assert f"entropy {entropy:.2f} of 31.00 bits" in text


@pytest.mark.parametrize("flush_at", [1, 5, 2**22])
def test_code_tally_equals_a_dense_histogram(flush_at: int) -> None:
    grids = [torch.randint(0, 50, shape) for shape in [(3, 4), (0, 2), (2, 2, 3), (7,), (1, 1)]]
    tally = CodeTally(flush_at=flush_at)
    for grid in grids:
        tally.add(grid)
    codes, counts = tally.result()
    dense = torch.bincount(torch.cat([g.reshape(-1) for g in grids]), minlength=50)
    assert codes.tolist() == torch.nonzero(dense).flatten().tolist()
    assert counts.tolist() == dense[dense > 0].tolist()


# -- ids, products and rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "vocabulary", "bad"),
    [
        (torch.tensor([1, 2, 200, 3], dtype=torch.uint8), 100, 200),
        (torch.tensor([1, -4, 2, 3], dtype=torch.int16), 1000, -4),
        (torch.tensor([1, 2, 3, 40000], dtype=torch.int32), 40000, 40000),
    ],
)
def test_out_of_range_ids_name_the_shard_and_item(
    tmp_path: Path, tokens: torch.Tensor, vocabulary: int, bad: int
) -> None:
    assert tokens.dtype == token_dtype(vocabulary)
    path = tmp_path / shard_name(0)
    tensors = {
        "tokens": tokens,
        "offsets": torch.tensor([0, 2, 4]),
        "shapes": torch.tensor([[1, 1, 2, 1], [1, 2, 1, 1]]),
        "kinds": torch.tensor([0, 0], dtype=torch.uint8),
    }
    _raw_shard(path, tensors, {"vocabulary": vocabulary})
    rows = [{"source": "a", "shard": path.name, "position": i, "shape": s} for i, s in enumerate([[1, 2], [2, 1]])]
    _write_manifest(tmp_path, rows)
    dataset = TokenDataset(tmp_path)
    bad_item = 0 if bad in tokens[:2].tolist() else 1
    assert dataset[1 - bad_item]["tokens"].flatten().tolist() == tokens[2 * (1 - bad_item) :][:2].tolist()
    with pytest.raises(ValueError, match=f"{path}: item {bad_item} holds token id {bad}, outside the vocabulary"):
        dataset[bad_item]


def test_a_shape_whose_product_wraps_around_int64_is_refused(tmp_path: Path) -> None:
    # 4 * (2**62 + 1) = 2**64 + 4, which int64 arithmetic wraps to 4: the length of the item's slice
    path = tmp_path / shard_name(0)
    tensors = {
        "tokens": torch.arange(4, dtype=torch.uint8),
        "offsets": torch.tensor([0, 4]),
        "shapes": torch.tensor([[1, 4, 2**62 + 1, 1]]),
        "kinds": torch.tensor([0], dtype=torch.uint8),
    }
    assert int(tensors["shapes"].prod(1)) == 4  # the wrap-around the check must not trust
    _raw_shard(path, tensors, {"vocabulary": 10})
    with pytest.raises(ValueError, match=f"{path}: inconsistent offsets"):
        read_shard(path)


@pytest.mark.parametrize(
    ("identity", "match"),
    [
        ({"vocabulary": 10, "depth": 2**70}, r"\['depth'\] must be an int in \[1, 2\*\*63\)"),
        ({"vocabulary": 10, "depth": 2**63}, r"\['depth'\] must be an int in \[1, 2\*\*63\)"),
        ({"vocabulary": 2**70}, "vocabulary must be an int in"),
        ({"vocabulary": 10, "depth": 1, "downsample": [1, 2**70, "8"]}, "'downsample' must be 3 positive ints"),
    ],
)
def test_identities_beyond_int64_are_refused(tmp_path: Path, identity: dict, match: str) -> None:
    tensors = {
        "tokens": torch.arange(4, dtype=torch.uint8),
        "offsets": torch.tensor([0, 4]),
        "shapes": torch.tensor([[1, 2, 2, 1]]),
        "kinds": torch.tensor([0], dtype=torch.uint8),
    }
    _raw_shard(tmp_path / shard_name(0), tensors, identity)
    _write_manifest(tmp_path, [{"source": "a", "shard": shard_name(0), "position": 0, "shape": [2, 2]}])
    with pytest.raises(ValueError, match=match):
        describe_tokens(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"position": None}, "'position' must be an int >= 0, got None"),
        ({"position": "0"}, "'position' must be an int >= 0"),
        ({"position": 1.5}, "'position' must be an int >= 0"),
        ({"position": True}, "'position' must be an int >= 0"),
        ({"position": -1}, "'position' must be an int >= 0"),
        ({"source": None}, "'source' must be a string"),
        ({"shape": 4}, "'shape' must be a list of ints"),
        ({"shape": [2, "2"]}, "'shape' must be a list of ints"),
        ({"kind": "audio"}, "'kind' must be one of"),
        ({"shard": "../model/model.safetensors"}, "'shard' must be the file name of a shard"),
        ({"shard": 0}, "'shard' must be the file name of a shard"),
    ],
)
def test_badly_typed_manifest_rows_name_the_line(tmp_path: Path, change: dict, match: str) -> None:
    write_shard(tmp_path / shard_name(0), [torch.zeros(2, 2, dtype=torch.long)] * 2, [0, 0], {"vocabulary": 5})
    rows = [{"source": "a", "shard": shard_name(0), "position": i, "shape": [2, 2], "kind": "image"} for i in range(2)]
    _write_manifest(tmp_path, [rows[0], {**rows[1], **change}])
    with pytest.raises(ValueError, match=match) as caught:
        TokenDataset(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'manifest.jsonl'}:2: ")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"position": 2}, "names item 2 of .*tokens-00000.safetensors, which holds 2 items"),
        ({"kind": "video"}, r"says kind 'video', but .*tokens-00000.safetensors\[1\] is of kind 'image'"),
    ],
)
def test_rows_that_disagree_with_the_shard_are_refused(tmp_path: Path, change: dict, match: str) -> None:
    write_shard(tmp_path / shard_name(0), [torch.zeros(2, 2, dtype=torch.long)] * 2, [0, 0], {"vocabulary": 5})
    rows = [{"source": "a", "shard": shard_name(0), "position": i, "shape": [2, 2], "kind": "image"} for i in range(2)]
    _write_manifest(tmp_path, [rows[0], {**rows[1], **change}])
    dataset = TokenDataset(tmp_path)
    assert dataset[0]["tokens"].tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match=match):
        dataset[1]


# -- fuzz: any folder is served, or refused with a ValueError, within the memory bound ----------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_EXTREMES = st.sampled_from(
    [0, 1, -1, 255, 256, 32768, 2**31 - 1, 2**31, 2**32, 2**62 + 1, 2**63 - 1, 2**63, 2**70, -(2**63)]
)
_VOCABULARIES = [1, 7, 256, 257, 32768, 32769, 2**31]


def _poke(tensor: torch.Tensor, index: int, value: int) -> torch.Tensor:
    """A copy of the integer ``tensor`` with element ``index`` (flat) set to ``value`` wrapped into its dtype."""
    info = torch.iinfo(tensor.dtype)
    out = tensor.clone()
    out.view(-1)[index] = (value - info.min) % (info.max - info.min + 1) + info.min
    return out


def _odd_value(draw: st.DrawFn) -> Any:
    """An extreme int half the time (the values that overflow), else any JSON value."""
    return draw(_EXTREMES) if draw(st.booleans()) else draw(_JSON)


@st.composite
def token_folders(draw: st.DrawFn) -> tuple[dict, dict, Any, list]:
    """A valid folder (tensors, metadata, identity, manifest rows), then at most two fields replaced by odd values."""
    vocabulary = draw(st.sampled_from(_VOCABULARIES))
    depth = draw(st.sampled_from([1, 1, 2]))
    kinds = draw(st.lists(st.sampled_from([0, 1]), max_size=3))
    grids = []
    for kind in kinds:
        shape = ([] if kind == 0 else [draw(st.integers(1, 2))]) + [draw(st.integers(0, 3)), draw(st.integers(1, 3))]
        shape += [depth] if depth > 1 else []
        grids.append(torch.randint(0, vocabulary, shape, generator=torch.Generator().manual_seed(len(grids))))
    identity: Any = {"vocabulary": vocabulary, "depth": depth, "downsample": [1, 4, 4]}
    flat = [g.reshape(-1).to(token_dtype(vocabulary)) for g in grids]
    tensors = {
        "tokens": torch.cat(flat) if flat else torch.zeros(0, dtype=token_dtype(vocabulary)),
        "offsets": torch.tensor([0, *torch.tensor([g.numel() for g in grids], dtype=torch.long).cumsum(0).tolist()]),
        "shapes": torch.tensor(
            [[g.shape[0] if k else 1, *g.shape[k : k + 2], depth] for g, k in zip(grids, kinds, strict=True)],
            dtype=torch.long,
        ).reshape(-1, 4),
        "kinds": torch.tensor(kinds, dtype=torch.uint8),
    }
    metadata: dict[str, Any] = {"items": str(len(grids))}
    rows = [
        {"source": f"{i}", "shard": shard_name(0), "position": i, "shape": list(g.shape), "kind": ["image", "video"][k]}
        for i, (g, k) in enumerate(zip(grids, kinds, strict=True))
    ]
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(["identity", "identity key", "items", "tensor", "dtype", "row"]))
        if target == "identity":
            identity = draw(_JSON)
        elif target == "identity key" and isinstance(identity, dict):
            identity = {
                **identity,
                draw(st.sampled_from(["vocabulary", "depth", "downsample"])): _odd_value(draw),
            }
        elif target == "items":
            metadata["items"] = draw(st.sampled_from(["x", "-1", "0", "3", str(2**40), str(2**70)]))
        elif target in ("tensor", "dtype"):
            name = draw(st.sampled_from(["tokens", "offsets", "shapes", "kinds"]))
            if target == "dtype":
                dtype = draw(st.sampled_from([torch.uint8, torch.int16, torch.int32, torch.int64, torch.float32]))
                tensors[name] = tensors[name].to(dtype)
            elif tensors[name].numel():
                index = draw(st.integers(0, tensors[name].numel() - 1))
                tensors[name] = _poke(tensors[name], index, draw(_EXTREMES))
        elif target == "row" and rows:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            row[draw(st.sampled_from(["shard", "position", "source", "shape", "kind"]))] = _odd_value(draw)
    return tensors, metadata, identity, rows


@settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(token_folders())
def test_fuzzed_token_folders_are_read_or_refused_cleanly(folder: tuple[dict, dict, Any, list]) -> None:
    tensors, metadata, identity, rows = folder
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        _raw_shard(path / shard_name(0), tensors, identity, metadata["items"])
        _write_manifest(path, rows)
        with memory_limit(BOUND):
            try:
                dataset = TokenDataset(path)
                items = [dataset[i] for i in range(len(dataset))]
                text = describe_tokens(path)
            except ValueError:
                return
        # served: every id within the vocabulary, every grid of the shape its row states
        vocabulary = dataset.vocabulary
        for item in items:
            assert list(item["tokens"].shape) == item["shape"]
            assert (
                item["tokens"].numel() == 0 or 0 <= int(item["tokens"].min()) <= int(item["tokens"].max()) < vocabulary
            )
        assert f"tokens         {sum(item['tokens'].numel() for item in items)}" in text
