"""``tokenizer info PATH``: a readable summary of a model folder or a token folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .models import SHIPPED_MODELS, load_tokenizer, resolve_pretrained
from .tokens import TokenDataset, list_shards


def describe(path: str | Path) -> str:
    """Summarise ``path``: a token folder (``manifest.jsonl``), a model folder (``config.json``) or the name of
    a shipped model (``default``, ``default-video``), resolved as ``--model`` resolves it: a local folder of that
    name holding a saved model first, else the one inside the package."""
    path = Path(path)
    if (path / "manifest.jsonl").is_file():
        return describe_tokens(path)
    if (resolve_pretrained(path) / "config.json").is_file():
        return describe_model(path)
    raise FileNotFoundError(
        f"{path} is neither a model folder (config.json) nor a token folder (manifest.jsonl) nor a shipped model "
        f"({', '.join(SHIPPED_MODELS)})"
    )


def describe_model(path: str | Path) -> str:
    """Where the model is, its size, token geometry, vocabulary, quantizer and architecture; for a model with a
    ``card.json`` (the shipped ones), the files it was trained on and held out."""
    folder = resolve_pretrained(path)
    model = load_tokenizer(folder)
    config = model.config
    quantizer = config.to_dict()["quantizer"]
    parameters = sum(p.numel() for p in model.parameters())
    shipped = folder != Path(path)
    lines = [
        f"shipped model  {str(path)!r}, in {folder}" if shipped else f"model folder   {path}",
        f"parameters     {parameters / 1e6:.1f} M",
        (
            f"downsampling   {model.downsample_factor}x (a 256x256 image -> {256 // model.downsample_factor}x"
            f"{256 // model.downsample_factor} tokens)"
        ),
        f"vocabulary     {model.codebook_size} ({math.log2(model.codebook_size):.1f} bits per token)",
        f"quantizer      {json.dumps(quantizer, sort_keys=True)}",
        (
            f"architecture   ch={config.ch} ch_mult={list(config.ch_mult)} res_blocks={config.num_res_blocks} "
            f"attention at {list(config.attn_resolutions)} z_channels={config.z_channels}"
        ),
    ]
    if hasattr(model, "temporal_factor"):
        lines.insert(3, f"frames         {model.temporal_factor} per token frame (the first frame alone); images too")
    card = folder / "card.json"
    if card.is_file():
        data = json.loads(card.read_text())
        lines.append(f"trained on     {', '.join(data.get('train', [])) or '(not recorded)'}")
        lines.append(f"held out       {', '.join(data.get('held_out', [])) or '(none)'}")
    return "\n".join(lines)


def describe_tokens(path: str | Path, top: int = 10) -> str:
    """Items, tokens, vocabulary, code usage (with the most frequent codes) and bits per pixel.

    Memory stays bounded by the tokens read, never by the vocabulary the shards claim (up to 2**31).
    """
    path = Path(path)
    dataset = TokenDataset(path)
    vocabulary = dataset.vocabulary
    tally = CodeTally()
    tokens = pixels = 0
    downsample = dataset.identity.get("downsample", [1, 1, 1])
    if not (isinstance(downsample, list) and len(downsample) == 3 and all(_is_positive_int(f) for f in downsample)):
        raise ValueError(f"{path}: the shards' 'downsample' must be 3 positive ints, got {downsample!r}")
    depth = dataset.identity.get("depth", 1) or 1
    for index in range(len(dataset)):
        item = dataset[index]
        grid = item["tokens"]
        tally.add(grid)
        tokens += grid.numel()
        rows, columns = item["shape"][-3:-1] if depth > 1 else item["shape"][-2:]
        frames = 1 + (item["shape"][0] - 1) * downsample[0] if item.get("kind") == "video" else 1
        pixels += frames * rows * downsample[1] * columns * downsample[2]
    codes, counts = tally.result()
    errors_path = path / "errors.jsonl"
    errors = len(errors_path.read_text().splitlines()) if errors_path.is_file() else 0
    used = len(codes)
    p = counts.double() / max(tokens, 1)
    entropy = float(-(p[p > 0] * p[p > 0].log2()).sum())
    lines = [
        f"token folder   {path}",
        f"items          {len(dataset)} in {len(list_shards(path))} shards ({errors} inputs in errors.jsonl)",
        f"tokens         {tokens}",
        (
            f"vocabulary     {vocabulary}; {used} codes used ({used / vocabulary:.1%}), "
            f"entropy {entropy:.2f} of {math.log2(vocabulary):.2f} bits"
        ),
        f"bits per pixel {tokens * math.log2(vocabulary) / max(pixels, 1):.4f} (at log2(vocabulary) bits per token)",
        f"tokenizer      {json.dumps({k: dataset.identity.get(k) for k in ('quantizer', 'depth', 'downsample')})}",
        "most used codes:",
    ]
    for rank in torch.argsort(counts, descending=True, stable=True)[:top].tolist():
        code, share = int(codes[rank]), int(counts[rank]) / max(tokens, 1)
        lines.append(f"  {code:>8}  {share:7.2%}  {'#' * max(1, round(share * 50))}")
    return "\n".join(lines)


class CodeTally:
    """How often each token id occurs, kept sparse: the distinct ids seen (ascending) and their counts.

    A dense histogram would cost ``8 * vocabulary`` bytes (17 GB for a vocabulary of 2**31, which a shard may
    claim); this costs ``O(distinct ids + flush_at)``. Grids are buffered and merged every ``flush_at`` tokens.
    """

    def __init__(self, flush_at: int = 2**22) -> None:
        self.flush_at = flush_at
        self._codes = torch.zeros(0, dtype=torch.int64)
        self._counts = torch.zeros(0, dtype=torch.int64)
        self._pending: list[torch.Tensor] = []
        self._pending_size = 0

    def add(self, grid: torch.Tensor) -> None:
        """Count the ids of an integer tensor of any shape."""
        self._pending.append(grid.reshape(-1).to(torch.int64))
        self._pending_size += grid.numel()
        if self._pending_size >= self.flush_at:
            self._merge()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, counts)``: int64 ``[U]`` distinct ids in ascending order, and int64 ``[U]`` occurrences."""
        self._merge()
        return self._codes, self._counts

    def _merge(self) -> None:
        if not self._pending:
            return
        values, counts = torch.unique(torch.cat(self._pending), return_counts=True)
        codes, inverse = torch.unique(torch.cat([self._codes, values]), return_inverse=True)
        merged = torch.zeros(len(codes), dtype=torch.int64)
        self._codes = codes
        self._counts = merged.index_add_(0, inverse, torch.cat([self._counts, counts]))
        self._pending, self._pending_size = [], 0


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
