"""Token shards: the files users keep, ``DIR/tokens-00000.safetensors`` ... plus ``DIR/manifest.jsonl``.

A shard holds ``N`` token grids of any size, so images and videos of different shapes share one file. Every
shard is a plain safetensors file; read it with this module, or with ``safetensors`` + ``numpy`` alone by
these rules:

Tensors
    ``tokens``   1-D, every grid flattened row-major (time, rows, columns, depth) and concatenated in item
                 order. Its dtype is the smallest that holds the vocabulary ``V``: uint8 if ``V <= 256``,
                 int16 if ``V <= 32768``, else int32. Every id lies in ``[0, V)``.
    ``offsets``  int64 ``[N + 1]``: item ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``; ``offsets[0] == 0``
                 and ``offsets[N] == len(tokens)``.
    ``shapes``   int64 ``[N, 4]``: ``(t, h, w, d)`` of item ``i``; ``t = 1`` for images, ``d = depth``.
    ``kinds``    uint8 ``[N]``: 0 = image grid ``[h, w]``, 1 = video grid ``[t, h, w]``.

Metadata (all values strings)
    ``format``     ``"tessera-tokens"``
    ``version``    ``"1"``
    ``tokenizer``  JSON of the tokenizer identity: ``vocabulary`` (int, always), and where known the config
                   hash, quantizer kind, levels, ``depth`` (int, 1 when absent) and downsample factors.
    ``items``      ``str(N)``

The original grid shape of item ``i`` is ``(h, w)`` for kind 0 and ``(t, h, w)`` for kind 1, with a trailing
``depth`` axis appended when the identity's ``depth`` is above 1 (residual quantizers). ``shapes[i, 3]`` equals
that depth, so ``shapes[i, 3] > 1`` says the same thing. In numpy::

    import json
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file

    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    depth = json.loads(meta["tokenizer"]).get("depth", 1)
    for i in range(int(meta["items"])):
        t, h, w, d = tensors["shapes"][i].tolist()
        shape = ((h, w) if tensors["kinds"][i] == 0 else (t, h, w)) + ((d,) if depth > 1 else ())
        grid = tensors["tokens"][tensors["offsets"][i] : tensors["offsets"][i + 1]].astype(np.int64).reshape(shape)

``manifest.jsonl`` (written by the pipeline) has one JSON row per item with at least ``shard`` (file name),
``position`` (index in that shard), ``source`` and ``shape``, and usually ``kind`` (``"image"`` or ``"video"``);
``TokenDataset`` serves items in its order. Readers check rows, shards and ids against these rules and raise
``ValueError`` naming the file on anything else: a token folder from elsewhere is untrusted input.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch.utils.data import Dataset

from ._atomic import write_bytes_atomically

FORMAT = "tessera-tokens"
VERSION = "1"
IMAGE = 0  # kind of a grid [h, w]
VIDEO = 1  # kind of a grid [t, h, w]
MAX_VOCABULARY = 2**31  # int32 holds ids up to 2**31 - 1

_TOKEN_DTYPES = {"U8": torch.uint8, "I16": torch.int16, "I32": torch.int32}
_KIND_NAMES = ("image", "video")  # the manifest's "kind" of grid kind 0 and 1


def token_dtype(vocabulary: int) -> torch.dtype:
    """The smallest dtype holding ids ``0 .. vocabulary - 1``: uint8 (<= 256), int16 (<= 32768), else int32."""
    if isinstance(vocabulary, bool) or not isinstance(vocabulary, int) or not 1 <= vocabulary <= MAX_VOCABULARY:
        raise ValueError(f"vocabulary must be an int in [1, {MAX_VOCABULARY}], got {vocabulary!r}")
    if vocabulary <= 256:
        return torch.uint8
    if vocabulary <= 32768:
        return torch.int16
    return torch.int32


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``tokens-00000.safetensors``."""
    return f"tokens-{index:05d}.safetensors"


def list_shards(directory: str | Path) -> list[Path]:
    """The shards in ``directory``, sorted by name (temporary files, which start with ``.``, are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("tokens-[0-9][0-9][0-9][0-9][0-9]*.safetensors"))


def _depth(identity: dict[str, Any], where: str) -> int:
    depth = identity.get("depth", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth < 2**63:  # shapes are int64
        raise ValueError(f"{where}['depth'] must be an int in [1, 2**63) when given, got {depth!r}")
    return depth


def _grid_shape(kind: int, t: int, h: int, w: int, depth: int) -> tuple[int, ...]:
    """The original grid shape of an item (the rule in the module docstring)."""
    shape = (h, w) if kind == IMAGE else (t, h, w)
    return shape + (depth,) if depth > 1 else shape


def write_shard(path: str | Path, grids: Sequence[torch.Tensor], kinds: Sequence[int], identity: dict) -> None:
    """Write ``grids`` as one shard at ``path``, atomically.

    Args:
        path: the shard file (normally ``DIR / shard_name(k)``); its folder must exist.
        grids: integer tensors of ids in ``[0, identity["vocabulary"])``: images ``[h, w]``, videos ``[t, h, w]``,
            each with a trailing ``depth`` axis when ``identity["depth"] > 1``. Any device; copied to the CPU.
        kinds: one per grid, 0 (image) or 1 (video).
        identity: JSON-ready tokenizer identity with an int ``"vocabulary"`` (and optionally ``"depth"``).

    The file is written under a temporary name (``.<name>.<pid>.tmp``) in the same folder, flushed, fsynced and
    renamed into place, so readers see the whole shard or none. An empty shard (no grids) is allowed.
    """
    path = Path(path)
    if not isinstance(identity, dict):
        raise TypeError(f"identity must be a dict, got {type(identity).__name__}")
    if "vocabulary" not in identity:
        raise ValueError("identity must include 'vocabulary' (the number of token ids)")
    try:
        dtype = token_dtype(identity["vocabulary"])
    except ValueError as error:
        raise ValueError(f"identity['vocabulary']: {error}") from None
    vocabulary = identity["vocabulary"]
    depth = _depth(identity, "identity")
    try:
        identity_json = json.dumps(identity, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"identity must be JSON-serializable: {error}") from None
    if len(grids) != len(kinds):
        raise ValueError(f"grids and kinds differ in length: {len(grids)} grids, {len(kinds)} kinds")

    flat: list[torch.Tensor] = []
    shapes = torch.ones(len(grids), 4, dtype=torch.int64)
    for i, (grid, kind) in enumerate(zip(grids, kinds, strict=True)):
        if kind not in (IMAGE, VIDEO) or isinstance(kind, bool):
            raise ValueError(f"kinds[{i}] must be 0 (image) or 1 (video), got {kind!r}")
        if not isinstance(grid, torch.Tensor):
            raise TypeError(f"grids[{i}] must be a torch.Tensor, got {type(grid).__name__}")
        if grid.dtype == torch.bool or grid.dtype.is_floating_point or grid.dtype.is_complex:
            raise TypeError(f"grids[{i}] must have an integer dtype, got {grid.dtype}")
        rank = (2 if kind == IMAGE else 3) + (depth > 1)
        if grid.ndim != rank or (depth > 1 and grid.shape[-1] != depth):
            expected = "[h, w]" if kind == IMAGE else "[t, h, w]"
            expected = expected[:-1] + f", {depth}]" if depth > 1 else expected
            raise ValueError(
                f"grids[{i}] (kind {kind}, {'video' if kind else 'image'}, depth {depth}) must have shape {expected}, "
                f"got {list(grid.shape)}"
            )
        grid = grid.detach().cpu()
        if grid.numel():
            low, high = int(grid.min()), int(grid.max())
            if low < 0 or high >= vocabulary:
                bad = low if low < 0 else high
                raise ValueError(f"grids[{i}] holds id {bad}, outside the vocabulary [0, {vocabulary})")
        t, h, w = (1, *grid.shape[:2]) if kind == IMAGE else tuple(grid.shape[:3])
        shapes[i, :3] = torch.tensor([t, h, w])
        shapes[i, 3] = depth
        flat.append(grid.reshape(-1).to(dtype))

    counts = torch.tensor([g.numel() for g in flat], dtype=torch.int64)
    offsets = torch.zeros(len(flat) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    tensors = {
        "tokens": torch.cat(flat) if flat else torch.zeros(0, dtype=dtype),
        "offsets": offsets,
        "shapes": shapes,
        "kinds": torch.tensor(list(kinds), dtype=torch.uint8),
    }
    metadata = {"format": FORMAT, "version": VERSION, "tokenizer": identity_json, "items": str(len(flat))}
    write_bytes_atomically(path, _serialize(tensors, metadata))


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """``safetensors.torch.save`` with the metadata keys sorted, so equal shards are equal bytes.

    safetensors keeps ``__metadata__`` in a Rust hash map whose order changes from call to call; the tensor
    entries and the data it lays out are already deterministic. The header is rewritten with sorted metadata
    and padded with spaces to a multiple of 8 bytes, as safetensors does.
    """
    data = save(tensors, metadata=metadata)
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + size :]


class Shard:
    """One shard, opened memory-mapped: ``grid(i)`` reads only item ``i``'s bytes.

    The small index tensors (``offsets``, ``shapes``, ``kinds``) are read and checked on opening; the token
    buffer is read slice by slice, and each slice's ids are checked against the vocabulary when it is read
    (a shard from elsewhere is untrusted input). A ``Shard`` pickles without its open file and reopens on
    first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        handle = self._open()
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a {FORMAT} shard (metadata format {metadata.get('format')!r})")
        if metadata.get("version") != VERSION:
            raise ValueError(f"{self.path} has unsupported {FORMAT} version {metadata.get('version')!r}")
        try:
            identity = dict(json.loads(metadata["tokenizer"]))
            items = int(metadata["items"])
            vocabulary = identity["vocabulary"]
            token_dtype(vocabulary)
            depth = _depth(identity, "tokenizer")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{self.path} has invalid {FORMAT} metadata: {error!r}") from None
        self.identity: dict[str, Any] = identity
        self.depth = depth

        missing = {"tokens", "offsets", "shapes", "kinds"} - set(handle.keys())
        if missing:
            raise ValueError(f"{self.path} lacks tensors {sorted(missing)}")
        tokens = handle.get_slice("tokens")
        if _TOKEN_DTYPES.get(tokens.get_dtype()) != token_dtype(vocabulary) or len(tokens.get_shape()) != 1:
            raise ValueError(
                f"{self.path}: tokens must be 1-D {token_dtype(vocabulary)} for vocabulary {vocabulary}, "
                f"got {tokens.get_dtype()} {tokens.get_shape()}"
            )
        self._offsets = handle.get_tensor("offsets")
        self._shapes = handle.get_tensor("shapes")
        self._kinds = handle.get_tensor("kinds")
        self._check(items, tokens.get_shape()[0])
        self._starts = self._offsets.tolist()

    def _open(self) -> Any:
        try:
            self._handle = safe_open(str(self.path), framework="pt")
        except SafetensorError as error:
            raise ValueError(f"{self.path} is not a readable safetensors file: {error}") from None
        return self._handle

    def _check(self, items: int, length: int) -> None:
        offsets, shapes, kinds = self._offsets, self._shapes, self._kinds
        if offsets.dtype != torch.int64 or offsets.shape != (items + 1,):
            raise ValueError(
                f"{self.path}: offsets must be int64 [{items + 1}], got {offsets.dtype} {list(offsets.shape)}"
            )
        if shapes.dtype != torch.int64 or shapes.shape != (items, 4):
            raise ValueError(f"{self.path}: shapes must be int64 [{items}, 4], got {shapes.dtype} {list(shapes.shape)}")
        if kinds.dtype != torch.uint8 or kinds.shape != (items,):
            raise ValueError(f"{self.path}: kinds must be uint8 [{items}], got {kinds.dtype} {list(kinds.shape)}")
        if (kinds > VIDEO).any():
            raise ValueError(f"{self.path}: kinds must be 0 or 1")
        if (shapes < 0).any() or (shapes[:, 3] != self.depth).any() or (shapes[kinds == IMAGE, 0] != 1).any():
            raise ValueError(f"{self.path}: inconsistent shapes (negative, depth != {self.depth}, or image t != 1)")
        # Python ints: a product or a difference of int64 values could wrap around and pass a tensor check.
        starts = offsets.tolist()
        steps = [stop - start for start, stop in itertools.pairwise(starts)]
        sizes = [t * h * w * d for t, h, w, d in shapes.tolist()]
        if starts[0] != 0 or starts[-1] != length or steps != sizes:
            raise ValueError(f"{self.path}: inconsistent offsets (they must step by each grid's size up to {length})")

    def __len__(self) -> int:
        return len(self._kinds)

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {self.path} ({len(self)} items)")
        return i % len(self)

    def kind(self, i: int) -> int:
        """0 for an image grid, 1 for a video grid."""
        return int(self._kinds[self._index(i)])

    def shape(self, i: int) -> tuple[int, ...]:
        """Item ``i``'s grid shape, without reading its tokens."""
        i = self._index(i)
        t, h, w, _ = self._shapes[i].tolist()
        return _grid_shape(int(self._kinds[i]), t, h, w, self.depth)

    def grid(self, i: int) -> torch.Tensor:
        """Item ``i`` as an int64 tensor of its original shape (``[h, w]``, ``[t, h, w]``, + ``[depth]``).

        Raises ``ValueError`` naming the shard and the item when an id lies outside ``[0, vocabulary)``.
        """
        i = self._index(i)
        handle = self.__dict__.get("_handle")
        if handle is None:
            handle = self._open()
        start, stop = self._starts[i], self._starts[i + 1]
        tokens = handle.get_slice("tokens")[start:stop]
        vocabulary = self.identity["vocabulary"]
        if tokens.numel():
            low, high = (int(v) for v in torch.aminmax(tokens))
            if low < 0 or high >= vocabulary:
                raise ValueError(
                    f"{self.path}: item {i} holds token id {low if low < 0 else high}, outside the vocabulary "
                    f"[0, {vocabulary})"
                )
        return tokens.to(torch.int64).reshape(self.shape(i))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_handle", None)
        return state

    def __repr__(self) -> str:
        return f"Shard({str(self.path)!r}, items={len(self)}, vocabulary={self.identity['vocabulary']})"


def read_shard(path: str | Path) -> Shard:
    """Open a shard lazily (see ``Shard``). A file that is not a valid shard raises ``ValueError`` naming it."""
    return Shard(path)


class TokenDataset(Dataset):
    """The items of a token folder in ``manifest.jsonl`` order.

    ``dataset[i]`` is the manifest row (``shard``, ``position``, ``source``, ``shape`` and any other keys, such
    as ``meta``: the captions, labels or kept columns of a tar or Parquet sample) plus ``"tokens"``: the int64
    grid. Shards open on first use and stay open per process; pickling (DataLoader
    workers under spawn) drops them, and a forked worker reopens its own.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest = self.directory / "manifest.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(f"no token manifest at {manifest}")
        self.rows: list[dict[str, Any]] = []
        with open(manifest, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{manifest}:{number}: not JSON: {error}") from None
                _check_row(row, f"{manifest}:{number}")
                self.rows.append(row)
        self._shards: dict[str, Shard] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, name: str) -> Shard:
        """The open shard ``name`` of this folder (cached per process); its identity must match the others'."""
        if self._pid != os.getpid():
            self._shards, self._pid = {}, os.getpid()
        shard = self._shards.get(name)
        if shard is None:
            shard = read_shard(self.directory / name)
            first = next(iter(self._shards.values()), None)
            if first is not None and first.identity != shard.identity:
                raise ValueError(f"{shard.path} was made by another tokenizer than {first.path}")
            self._shards[name] = shard
        return shard

    def _first_shard(self) -> Shard:
        if self._shards:
            return next(iter(self._shards.values()))
        if self.rows:
            return self.shard(self.rows[0]["shard"])
        shards = list_shards(self.directory)
        if not shards:
            raise ValueError(f"{self.directory} holds no token shards")
        return self.shard(shards[0].name)

    @property
    def identity(self) -> dict[str, Any]:
        """The tokenizer identity stored in the shards' metadata."""
        return self._first_shard().identity

    @property
    def vocabulary(self) -> int:
        """Number of token ids (every id lies in ``[0, vocabulary)``)."""
        return int(self.identity["vocabulary"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        shard = self.shard(row["shard"])
        position = row["position"]
        if position >= len(shard):
            raise ValueError(f"manifest row {i} names item {position} of {shard.path}, which holds {len(shard)} items")
        if "kind" in row and row["kind"] != _KIND_NAMES[shard.kind(position)]:
            raise ValueError(
                f"manifest row {i} says kind {row['kind']!r}, but {shard.path}[{position}] is of kind "
                f"{_KIND_NAMES[shard.kind(position)]!r}"
            )
        grid = shard.grid(position)
        if list(grid.shape) != list(row["shape"]):
            raise ValueError(
                f"manifest row {i} says shape {row['shape']}, "
                f"but {row['shard']}[{row['position']}] has shape {list(grid.shape)}"
            )
        return {**row, "tokens": grid}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state


def _check_row(row: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``row`` is a well-typed manifest row (see the module
    docstring): ``shard`` a file name in the folder, ``position`` an int >= 0, ``source`` a string, ``shape`` a
    list of ints >= 0 and, when present, ``kind`` "image" or "video". Rows come from files, so never trusted:
    every bad row is a ``ValueError``, also a badly typed one."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a manifest row must be a JSON object, got {type(row).__name__}")  # noqa: TRY004
    missing = [k for k in ("shard", "position", "source", "shape") if k not in row]
    if missing:
        raise ValueError(f"{where}: row lacks {missing}")
    shard, position, shape = row["shard"], row["position"], row["shape"]
    if not isinstance(shard, str) or not shard or shard.startswith(".") or "/" in shard or "\\" in shard:
        raise ValueError(f"{where}: 'shard' must be the file name of a shard in this folder, got {shard!r}")
    if not _is_count(position):
        raise ValueError(f"{where}: 'position' must be an int >= 0, got {position!r}")
    if not isinstance(row["source"], str):
        raise ValueError(f"{where}: 'source' must be a string, got {row['source']!r}")  # noqa: TRY004
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise ValueError(f"{where}: 'shape' must be a list of ints >= 0, got {shape!r}")
    if "kind" in row and row["kind"] not in _KIND_NAMES:
        raise ValueError(f"{where}: 'kind' must be one of {list(_KIND_NAMES)}, got {row['kind']!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def to_sequence(grid: torch.Tensor, *, bos: int | None = None, eos: int | None = None, offset: int = 0) -> torch.Tensor:
    """Flatten a grid row-major (time, rows, columns, depth) into an int64 sequence for a language model.

    Every token gets ``offset`` added (to place the image vocabulary after text ids); ``bos`` is prepended and
    ``eos`` appended as given (not offset). Returns int64 ``[numel + (bos given) + (eos given)]``.
    """
    if grid.dtype == torch.bool or grid.dtype.is_floating_point or grid.dtype.is_complex:
        raise TypeError(f"grid must have an integer dtype, got {grid.dtype}")
    parts = [grid.reshape(-1).to(torch.int64) + offset]
    if bos is not None:
        parts.insert(0, torch.tensor([bos], dtype=torch.int64, device=grid.device))
    if eos is not None:
        parts.append(torch.tensor([eos], dtype=torch.int64, device=grid.device))
    return torch.cat(parts)


def collate_sequences(batch: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D sequences into int64 ``[B, L]`` (L the longest) and a bool mask, True on real tokens."""
    for i, sequence in enumerate(batch):
        if sequence.ndim != 1:
            raise ValueError(f"batch[{i}] must be 1-D, got shape {list(sequence.shape)}")
    length = max((len(s) for s in batch), default=0)
    device = batch[0].device if batch else None
    tokens = torch.full((len(batch), length), pad, dtype=torch.int64, device=device)
    mask = torch.zeros((len(batch), length), dtype=torch.bool, device=device)
    for i, sequence in enumerate(batch):
        tokens[i, : len(sequence)] = sequence
        mask[i, : len(sequence)] = True
    return tokens, mask
