"""``tokenizer info PATH``: a readable summary of a model folder or a token folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .models import load_tokenizer
from .tokens import TokenDataset, list_shards


def describe(path: str | Path) -> str:
    """Summarise ``path``: a model folder (``config.json``) or a token folder (``manifest.jsonl``)."""
    path = Path(path)
    if (path / "manifest.jsonl").is_file():
        return describe_tokens(path)
    if (path / "config.json").is_file():
        return describe_model(path)
    raise FileNotFoundError(f"{path} is neither a model folder (config.json) nor a token folder (manifest.jsonl)")


def describe_model(path: str | Path) -> str:
    model = load_tokenizer(path)
    config = model.config
    quantizer = config.to_dict()["quantizer"]
    parameters = sum(p.numel() for p in model.parameters())
    lines = [
        f"model folder   {path}",
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
    return "\n".join(lines)


def describe_tokens(path: str | Path, top: int = 10) -> str:
    """Items, tokens, vocabulary, code usage (with the most frequent codes) and bits per pixel."""
    path = Path(path)
    dataset = TokenDataset(path)
    vocabulary = dataset.vocabulary
    counts = torch.zeros(vocabulary, dtype=torch.long)
    tokens = pixels = 0
    downsample = dataset.identity.get("downsample", [1, 1, 1])
    depth = dataset.identity.get("depth", 1) or 1
    for index in range(len(dataset)):
        item = dataset[index]
        grid = item["tokens"]
        counts += torch.bincount(grid.flatten(), minlength=vocabulary)
        tokens += grid.numel()
        rows, columns = item["shape"][-3:-1] if depth > 1 else item["shape"][-2:]
        frames = 1 + (item["shape"][0] - 1) * downsample[0] if item.get("kind") == "video" else 1
        pixels += frames * rows * downsample[1] * columns * downsample[2]
    errors_path = path / "errors.jsonl"
    errors = len(errors_path.read_text().splitlines()) if errors_path.is_file() else 0
    used = int((counts > 0).sum())
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
    for code in torch.argsort(counts, descending=True, stable=True)[: min(top, used)].tolist():
        share = int(counts[code]) / max(tokens, 1)
        lines.append(f"  {code:>8}  {share:7.2%}  {'#' * max(1, round(share * 50))}")
    return "\n".join(lines)
