"""``tokenizer demo``: the shipped default tokenizers on the bundled real samples, end to end and offline.

It runs the code behind ``tokenizer encode`` and ``tokenizer decode``, then measures what came back::

    OUT/tokens/images/, OUT/tokens/videos/      token shards (the ``encode`` format; see README)
    OUT/reconstructions/images/, .../videos/    decoded PNGs and mp4s (what ``decode`` writes)
    OUT/side_by_side.png                        every photo beside its reconstruction
    OUT/side_by_side-<clip>.mp4                 each clip beside its reconstruction
    OUT/report.md, OUT/report.json              per item: pixels, token grid, bits per pixel, PSNR, SSIM

Bits per pixel: ``bpp = tokens * log2(codebook_size) / (frames * H * W)``. PSNR and SSIM (``tokenizer.metrics``)
compare the pixels the encoder saw (cropped to the token factor) with the decoded ones, which are decoded once,
by ``decode_folder``, as it writes them. An item is marked held out ("yes") or trained on ("no") when the
model's ``card.json`` lists its file name exactly under ``held_out`` or ``train``; "?" when it lists neither.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import torch
from PIL import Image

from . import metrics
from ._atomic import atomic_target, write_text_atomically
from .assets import sample_images, sample_videos
from .data.images import to_uint8
from .data.items import crop_to_factor
from .data.preprocess import ImagePreprocess, load_for_tokenization
from .data.video import iter_frames
from .data.video_write import write_side_by_side
from .models import Tokenizer, VideoTokenizer, load_tokenizer, resolve_pretrained
from .pipeline import EncodeOptions, OutputMismatchError, encode_dataset
from .reconstruct import decode_folder
from .tokens import TokenDataset

log = logging.getLogger(__name__)


@dataclass
class ItemQuality:
    source: str
    kind: str  # "image" or "video"
    width: int  # pixels tokenized (after cropping to the token factor)
    height: int
    frames: int  # 1 for images
    grid: list[int]  # token grid shape: [h, w] or [t, h, w]
    bits_per_pixel: float
    psnr: float  # dB; videos: the mean over frames
    ssim: float  # videos: the mean over frames
    held_out: bool | None  # None: the model's card names the file neither as trained on nor as held out


@dataclass
class DemoReport:
    out_dir: Path
    models: dict[str, str]  # "image" / "video" -> the model used
    items: list[ItemQuality]
    skipped: list[dict[str, str]] = field(default_factory=list)  # inputs that could not be tokenized: source, error

    def to_markdown(self) -> str:
        lines = [
            f"# Tokenizer demo ({', '.join(f'{kind}: {name}' for kind, name in self.models.items())})",
            "",
            "| item | kind | pixels | token grid | bits/pixel | PSNR (dB) | SSIM | held out |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for q in self.items:
            pixels = f"{q.width}x{q.height}" + (f" x {q.frames} frames" if q.kind == "video" else "")
            held_out = {True: "yes", False: "no", None: "?"}[q.held_out]
            lines.append(
                f"| {Path(q.source).name} | {q.kind} | {pixels} | {'x'.join(map(str, q.grid))} | "
                f"{q.bits_per_pixel:.3f} | {q.psnr:.2f} | {q.ssim:.3f} | {held_out} |"
            )
        lines.append("")
        for kind in ("image", "video"):
            every = [q for q in self.items if q.kind == kind]
            for label, chosen in ((f"all {kind}s", every), (f"held-out {kind}s", [q for q in every if q.held_out])):
                if chosen:
                    psnr = sum(q.psnr for q in chosen) / len(chosen)
                    ssim = sum(q.ssim for q in chosen) / len(chosen)
                    lines.append(f"Mean over {label} ({len(chosen)}): PSNR {psnr:.2f} dB, SSIM {ssim:.3f}.  ")
        for row in self.skipped:
            lines.append(f"Skipped {row['source']}: {row['error']}.  ")
        lines.append("")
        outputs = ["tokens", "reconstructions", "side_by_side.png", *self._clip_views()]
        lines.append("Wrote " + ", ".join(str(self.out_dir / o) for o in outputs if (self.out_dir / o).exists()) + ".")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        items = [{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(q).items()} for q in self.items]
        return json.dumps({"models": self.models, "items": items, "skipped": self.skipped}, indent=2) + "\n"

    def _clip_views(self) -> list[str]:
        return [_clip_view_name(q.source) for q in self.items if q.kind == "video"]


def run_demo(
    out_dir: str | Path,
    *,
    image_model: str = "default",
    video_model: str | None = "default-video",
    images: Sequence[Path] | None = None,
    videos: Sequence[Path] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> DemoReport:
    """Tokenize ``images`` (default: the bundled photos) with ``image_model`` and ``videos`` (default: the
    bundled clip) with ``video_model`` (None: skip videos) into ``out_dir``, decode them back, and write the
    side-by-side views and the report (see the module docstring). The demo owns ``tokens/``,
    ``reconstructions/``, the side-by-side views and the report in ``out_dir``: a rerun with the same models
    and inputs reuses the shards there, one with others replaces them. Inputs that cannot be tokenized are
    listed in ``report.skipped``."""
    out_dir = Path(out_dir)
    images = sorted(images if images is not None else sample_images())
    videos = sorted(videos if videos is not None else sample_videos()) if video_model else []
    report = DemoReport(out_dir, {}, [])
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for kind, name, paths in (("image", image_model, images), ("video", video_model, videos)):
        if not paths or name is None:
            _remove_outputs(out_dir, kind)
            continue
        model = load_tokenizer(name)
        report.models[kind] = str(name)
        token_dir = out_dir / "tokens" / f"{kind}s"
        options = EncodeOptions(ImagePreprocess(factor=model.downsample_factor), device=device, progress=progress)
        try:
            encode_dataset(list(paths), model, token_dir, options)
        except OutputMismatchError as err:
            log.warning("replacing the demo's earlier %s outputs: %s", kind, err)
            _remove_outputs(out_dir, kind)
            encode_dataset(list(paths), model, token_dir, options)
        report.skipped += [{"source": r["source"], "error": r["error"]} for r in _jsonl(token_dir / "errors.jsonl")]
        decoded: dict[int, list[torch.Tensor]] = {}  # index -> its pixels (a video: window by window)
        decode_folder(token_dir, model, out_dir / "reconstructions" / f"{kind}s", device=device, progress=progress,
                      on_decoded=lambda index, _, pixels, into=decoded: into.setdefault(index, []).append(pixels))  # fmt: skip
        names = _card_names(name)
        for index, item in enumerate(TokenDataset(token_dir)):
            original = _original(model, item)
            reconstruction = torch.cat(decoded[index], dim=1) if kind == "video" else decoded[index][0]
            report.items.append(_quality(item, model, original, reconstruction, names))
            if kind == "image":
                pairs.append((original, reconstruction))
            else:
                view = out_dir / _clip_view_name(item["source"])
                write_side_by_side(view, original, reconstruction, fps=float(item.get("fps") or 25.0))
    if pairs:
        with atomic_target(out_dir / "side_by_side.png") as temporary:
            side_by_side_image(pairs).save(temporary, format="PNG")
    write_text_atomically(out_dir / "report.md", report.to_markdown())
    write_text_atomically(out_dir / "report.json", report.to_json())
    return report


def side_by_side_image(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], columns: int = 2, gap: int = 4
) -> Image.Image:
    """One RGB image of ``original | reconstruction`` pairs (fp32 ``[3, H, W]`` in ``[-1, 1]``), ``columns``
    pairs to a row on a white background, ``gap`` pixels apart."""
    if not pairs:
        raise ValueError("side_by_side_image needs at least one (original, reconstruction) pair")
    cell_w = max(a.shape[-1] + b.shape[-1] for a, b in pairs) + gap
    cell_h = max(max(a.shape[-2], b.shape[-2]) for a, b in pairs)
    columns = min(columns, len(pairs))
    rows = math.ceil(len(pairs) / columns)
    canvas = Image.new("RGB", (columns * (cell_w + gap) - gap, rows * (cell_h + gap) - gap), "white")
    for index, (original, reconstruction) in enumerate(pairs):
        x, y = index % columns * (cell_w + gap), index // columns * (cell_h + gap)
        canvas.paste(Image.fromarray(to_uint8(original)), (x, y))
        canvas.paste(Image.fromarray(to_uint8(reconstruction)), (x + original.shape[-1] + gap, y))
    return canvas


def _original(model: Tokenizer | VideoTokenizer, item: dict) -> torch.Tensor:
    """The pixels the encoder saw, fp32 CPU ``[3, H, W]`` or ``[3, T, H, W]`` in ``[-1, 1]``."""
    factor = model.downsample_factor
    if item.get("kind", "image") == "video":
        frames = iter_frames(item["source"], start=float(item.get("start", 0.0)), stride=int(item.get("stride", 1)))
        try:
            return crop_to_factor(torch.stack(list(islice(frames, item["frames"])), dim=1), factor)
        finally:
            frames.close()
    return load_for_tokenization(item["source"], ImagePreprocess(factor=factor)).pixels


def _quality(
    item: dict, model: Tokenizer, original: torch.Tensor, reconstruction: torch.Tensor, card: dict[str, bool]
) -> ItemQuality:
    as_frames = (lambda x: x.transpose(0, 1)) if original.ndim == 4 else (lambda x: x[None])  # [T, 3, H, W]
    frames_a, frames_b = as_frames(original), as_frames(reconstruction)
    tokens = item["tokens"]
    bits = tokens.numel() * math.log2(model.codebook_size)
    return ItemQuality(
        source=str(item["source"]),
        kind=item.get("kind", "image"),
        width=original.shape[-1],
        height=original.shape[-2],
        frames=frames_a.shape[0],
        grid=list(tokens.shape),
        bits_per_pixel=bits / frames_a[:, 0].numel(),
        psnr=metrics.psnr(frames_a, frames_b).mean().item(),
        ssim=metrics.ssim(frames_a, frames_b).mean().item(),
        held_out=card.get(Path(item["source"]).name),
    )


def _card_names(model: str) -> dict[str, bool]:
    """The file names the model's ``card.json`` lists: True for held out, False for trained on (a name in both
    lists counts as trained on: it was seen)."""
    card = resolve_pretrained(model) / "card.json"
    data = json.loads(card.read_text()) if card.is_file() else {}
    return {name: held_out for key, held_out in (("held_out", True), ("train", False)) for name in data.get(key, [])}


def _clip_view_name(source: str) -> str:
    return f"side_by_side-{Path(source).stem}.mp4"


def _remove_outputs(out_dir: Path, kind: str) -> None:
    """Delete what an earlier demo run wrote for ``kind`` ("image" or "video") in ``out_dir``."""
    for folder in (out_dir / "tokens" / f"{kind}s", out_dir / "reconstructions" / f"{kind}s"):
        shutil.rmtree(folder, ignore_errors=True)
    views = [out_dir / "side_by_side.png"] if kind == "image" else list(out_dir.glob("side_by_side-*.mp4"))
    for view in views:
        view.unlink(missing_ok=True)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
