"""Token folders back to pixels: ``tokenizer decode TOKENS --model M --out DIR``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ._atomic import atomic_target
from ._distributed import default_device
from .data.images import to_uint8
from .data.video_write import write_video
from .models import SHIPPED_MODELS, Tokenizer, VideoTokenizer, load_tokenizer, shipped_model_dir
from .pipeline import tokenizer_identity
from .tokens import TokenDataset


def decode_folder(
    token_dir: str | Path,
    model: Tokenizer,
    out_dir: str | Path,
    *,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Decode every item of a token folder into ``out_dir/NNNNNNNN-<source stem>.png`` (images) or ``.mp4``
    (videos, at the tokenized frame rate; N: manifest order).

    The model must be the one that made the tokens (same weights hash), else ValueError. Images of one grid
    shape are decoded together, ``batch_size`` at a time; videos one by one, window by window. Returns the
    written paths in manifest order.
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
    written: dict[int, Path] = {}
    buckets: dict[tuple[int, ...], list[tuple[int, torch.Tensor, str]]] = {}

    def flush(shape: tuple[int, ...]) -> None:
        batch = buckets.pop(shape)
        with torch.no_grad():
            pixels = model.decode(torch.stack([grid for _, grid, _ in batch]).to(device)).float().cpu()
        for (index, _, source), image in zip(batch, pixels):
            target = out_dir / f"{index:08d}-{Path(source).stem}.png"
            with atomic_target(target) as temporary:
                Image.fromarray(to_uint8(image)).save(temporary, format="PNG")
            written[index] = target

    for index in tqdm(range(len(dataset)), unit="item", desc="decode", disable=not progress, dynamic_ncols=True):
        item = dataset[index]
        if item.get("kind", "image") == "video":
            written[index] = _decode_video(model, item, out_dir / f"{index:08d}-{Path(item['source']).stem}.mp4")
            continue
        shape = tuple(item["tokens"].shape)
        buckets.setdefault(shape, []).append((index, item["tokens"], item["source"]))
        if len(buckets[shape]) == batch_size:
            flush(shape)
    for shape in list(buckets):
        flush(shape)
    return [written[i] for i in sorted(written)]


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


def _decode_video(model: VideoTokenizer, item: dict, target: Path) -> Path:
    """Decode and write a video window by window: memory holds one window, whatever the video's length."""
    return write_video(target, iter_video_pixels(model, item["tokens"]), fps=float(item.get("fps") or 25.0))
