"""Token folders back to pixels: ``tokenizer decode TOKENS --model M --out DIR``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image

from ._atomic import NAME_MAX, atomic_target, remove_leftovers
from ._distributed import default_device
from ._progress import WorkProgress
from .data.images import to_uint8
from .data.video_write import write_video
from .models import SHIPPED_MODELS, Tokenizer, VideoTokenizer, load_tokenizer, shipped_model_dir
from .pipeline import tokenizer_identity
from .tokens import TokenDataset

# The names decode writes (output_name) and the stand-in of a name too long for its temporary name.
_OUR_NAMES = re.compile(r"[0-9]{8}-.*\.(png|mp4)|[0-9a-f]{16}")


def decode_folder(
    token_dir: str | Path,
    model: Tokenizer,
    out_dir: str | Path,
    *,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
    on_decoded: Callable[[int, dict, torch.Tensor], None] | None = None,
) -> list[Path]:
    """Decode every item of a token folder into ``out_dir/NNNNNNNN-<source stem>.png`` (images) or ``.mp4``
    (videos, at the tokenized frame rate; N: manifest order). A stem too long for one file name is cut to
    fit (``output_name``); temporary files an earlier, killed decode left in ``out_dir`` are removed first.

    The model must be the one that made the tokens (same weights hash), else ValueError. Images of one grid
    shape are decoded together, ``batch_size`` at a time; videos one by one, window by window. The progress
    bar counts an item once its file is written and shows pixels/s (and frames/s for videos). ``on_decoded``,
    if given, is called before each write with the item's index, its ``TokenDataset`` row and its decoded
    pixels, fp32 CPU in ``[-1, 1]``: ``[3, H, W]`` for an image, ``[3, t, H, W]`` for each window of a video
    in order (so a caller can measure the reconstructions without decoding again). Returns the written paths
    in manifest order.
    """
    dataset = TokenDataset(token_dir)
    expected = dataset.identity.get("weights_sha256")
    if expected != tokenizer_identity(model)["weights_sha256"]:
        raise ValueError(
            f"{token_dir} was made by another tokenizer (weights hash {str(expected)[:12]}...); pass its --model"
        )
    device = torch.device(device) if device else default_device(0)
    model = model.to(device).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir, _OUR_NAMES)
    written: dict[int, Path] = {}
    buckets: dict[tuple[int, ...], list[tuple[int, dict]]] = {}
    bar = WorkProgress(len(dataset), "decode", enabled=progress)

    def flush(shape: tuple[int, ...]) -> None:
        batch = buckets.pop(shape)
        with torch.no_grad():
            pixels = model.decode(torch.stack([item["tokens"] for _, item in batch]).to(device)).float().cpu()
        for (index, item), image in zip(batch, pixels.clamp(-1, 1)):
            if on_decoded is not None:
                on_decoded(index, item, image)
            target = out_dir / output_name(index, item["source"], ".png")
            with atomic_target(target) as temporary:
                Image.fromarray(to_uint8(image)).save(temporary, format="PNG")
            written[index] = target
            bar.advance(1, pixels=image[0].numel())

    def video_pieces(index: int, item: dict) -> Iterator[torch.Tensor]:
        for piece in iter_video_pixels(model, item["tokens"]):
            if on_decoded is not None:
                on_decoded(index, item, piece)
            yield piece
            bar.advance(pixels=piece[0].numel(), frames=piece.shape[1])  # asked for the next: this one is written

    with bar:
        for index in range(len(dataset)):
            item = dataset[index]
            if item.get("kind", "image") == "video":
                target = out_dir / output_name(index, item["source"], ".mp4")
                written[index] = write_video(target, video_pieces(index, item), fps=float(item.get("fps") or 25.0))
                bar.advance(1)
                continue
            shape = tuple(item["tokens"].shape)
            buckets.setdefault(shape, []).append((index, item))
            if len(buckets[shape]) == batch_size:
                flush(shape)
        for shape in list(buckets):
            flush(shape)
    return [written[i] for i in sorted(written)]


def output_name(index: int, source: str, suffix: str, limit: int = NAME_MAX) -> str:
    """``NNNNNNNN-<stem of source><suffix>``, the stem cut (whole characters) so the name takes at most
    ``limit`` bytes in the filesystem's encoding; the index keeps cut names unique. A sample of a tar shard or
    a Parquet row (``shard.tar#key``, ``file.parquet#row``) is named ``<container stem>-<key>``."""
    prefix = f"{index:08d}-"
    room = limit - len(os.fsencode(prefix + suffix))
    container, mark, key = source.partition("#")
    stem = f"{Path(container).stem}-{Path(key).name}" if mark and key else Path(source).stem
    while len(os.fsencode(stem)) > room:
        stem = stem[: -max(1, (len(os.fsencode(stem)) - room) // 4)]  # a character takes at most 4 bytes
    return prefix + stem + suffix


def shipped_model_for(token_dir: str | Path) -> tuple[str, Tokenizer]:
    """The shipped tokenizer (name and model) whose weights made ``token_dir``'s tokens. ValueError when none
    did (those tokens need their own ``--model``); FileNotFoundError when the installation lacks the models."""
    expected = TokenDataset(token_dir).identity.get("weights_sha256")
    for name in SHIPPED_MODELS:
        model = load_tokenizer(shipped_model_dir(name))
        if tokenizer_identity(model)["weights_sha256"] == expected:
            return name, model
    raise ValueError(f"{token_dir} was not made by a shipped tokenizer ({', '.join(SHIPPED_MODELS)}); pass --model")


def decode_video_tokens(model: VideoTokenizer, tokens: torch.Tensor, window: int = 8) -> torch.Tensor:
    """A video's token grid ``[T', h, w]`` back to fp32 CPU pixels ``[3, T, H, W]`` in ``[-1, 1]``."""
    return torch.cat(list(iter_video_pixels(model, tokens, window)), dim=1)


@torch.no_grad()
def iter_video_pixels(model: VideoTokenizer, tokens: torch.Tensor, window: int = 8) -> Iterator[torch.Tensor]:
    """The pixels of a video's token grid ``[T', h, w]``, ``window`` token frames at a time: fp32 CPU pieces
    ``[3, t, H, W]`` in ``[-1, 1]`` (the causal decoder chains them, so memory follows the window)."""
    device = next(model.parameters()).device
    tokens = tokens[None].to(device)
    chunks = (tokens[:, i : i + window] for i in range(0, tokens.shape[1], window))
    for pixels in model.decode_windows(chunks):
        yield pixels[0].float().cpu().clamp(-1, 1)
