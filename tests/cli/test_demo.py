"""``tokenizer demo`` end to end on the shipped models and samples, and the CLI's shipped-model defaults."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests._models import small_video_model
from tests._video_synth import make_test_clip
from tokenizer import metrics
from tokenizer.assets import sample_images, sample_videos
from tokenizer.cli import main
from tokenizer.data.images import to_tensor, to_uint8
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization
from tokenizer.data.video import probe_video
from tokenizer.demo import run_demo, side_by_side_image
from tokenizer.models import Tokenizer, TokenizerConfig, load_tokenizer
from tokenizer.pipeline import tokenizer_identity
from tokenizer.quantizers import VQConfig
from tokenizer.tokens import TokenDataset

HELD_OUT = {"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.png", "pan-chelsea.mp4"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def _report(out: Path) -> list[dict]:
    return json.loads((out / "report.json").read_text())["items"]


def test_demo_writes_tokens_reconstructions_and_report(demo_dir):
    items = _report(demo_dir)
    photos, clips = sample_images(), sample_videos()
    assert [Path(q["source"]).name for q in items] == [p.name for p in photos + clips]
    # the cards name every shipped sample exactly: held out as listed, every other one trained on
    assert [q["held_out"] for q in items] == [Path(q["source"]).name in HELD_OUT for q in items]
    assert [q["held_out"] for q in items if Path(q["source"]).name == "hubble.png"] == [False]

    images = TokenDataset(demo_dir / "tokens" / "images")
    videos = TokenDataset(demo_dir / "tokens" / "videos")
    assert len(images) == len(photos) and len(videos) == len(clips)
    bits = math.log2(load_tokenizer("default").codebook_size)
    for quality, token_item in zip(items, [images[i] for i in range(len(images))] + [videos[0]]):
        assert quality["grid"] == list(token_item["tokens"].shape)
        pixels = quality["width"] * quality["height"] * quality["frames"]
        assert quality["bits_per_pixel"] == pytest.approx(token_item["tokens"].numel() * bits / pixels, abs=1e-4)
        assert 0 < quality["ssim"] <= 1 and quality["psnr"] > 10

    table = (demo_dir / "report.md").read_text()
    assert all(f"| {Path(q['source']).name} |" in table for q in items)
    assert "Mean over held-out images (5)" in table and "Mean over held-out videos (1)" in table


def test_demo_psnr_matches_the_written_reconstructions(demo_dir):
    """The report's PSNR is recomputed from the PNGs `decode` wrote (they differ only by 8-bit rounding)."""
    written = sorted((demo_dir / "reconstructions" / "images").glob("*.png"))
    assert len(written) == len(sample_images())
    factor = load_tokenizer("default").downsample_factor
    for quality, path in zip(_report(demo_dir), written):
        assert path.name.endswith(Path(quality["source"]).stem + ".png")
        original = load_for_tokenization(quality["source"], ImagePreprocess(factor=factor)).pixels
        decoded = to_tensor(Image.open(path))
        assert decoded.shape == original.shape == (3, quality["height"], quality["width"])
        assert metrics.psnr(original[None], decoded[None]).item() == pytest.approx(quality["psnr"], abs=0.1)
    (video,) = (demo_dir / "reconstructions" / "videos").glob("*.mp4")
    clip = _report(demo_dir)[-1]
    info = probe_video(video)
    assert (info.width, info.height, info.frames) == (clip["width"], clip["height"], clip["frames"])


def test_demo_side_by_side_views(demo_dir):
    items = _report(demo_dir)
    view = np.asarray(Image.open(demo_dir / "side_by_side.png").convert("RGB"))
    factor = load_tokenizer("default").downsample_factor
    first = load_for_tokenization(items[0]["source"], ImagePreprocess(factor=factor)).pixels
    np.testing.assert_array_equal(view[: first.shape[1], : first.shape[2]], to_uint8(first))
    assert view.shape[0] == 4 * 128 + 3 * 4  # 8 photos, 2 pairs a row, 128 pixels high, 4-pixel gaps
    clip = items[-1]
    info = probe_video(demo_dir / f"side_by_side-{Path(clip['source']).stem}.mp4")
    assert (info.width, info.height) == (2 * clip["width"], clip["height"])


def test_demo_rerun_reuses_the_shards(demo_dir, capsys):
    shards = {p: p.stat().st_mtime_ns for p in (demo_dir / "tokens").rglob("*.safetensors")}
    before = (demo_dir / "report.json").read_text()
    assert main(["demo", "--out", str(demo_dir)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (demo_dir / "tokens").rglob("*.safetensors")} == shards
    assert (demo_dir / "report.json").read_text() == before
    assert "| chelsea.png | image |" in capsys.readouterr().out


def test_demo_with_other_models_replaces_its_outputs(demo_dir, tmp_path):
    """Another model's run into the same folder replaces the demo's tokens; --no-video drops the clip's."""
    out = tmp_path / "demo"
    shutil.copytree(demo_dir, out)
    _tiny_model().save_pretrained(tmp_path / "tiny")
    assert main(["demo", "--out", str(out), "--model", str(tmp_path / "tiny"), "--no-video"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == {"image": str(tmp_path / "tiny")} and len(report["items"]) == len(sample_images())
    assert all(q["held_out"] is None for q in report["items"])  # no card.json: unknown
    assert TokenDataset(out / "tokens" / "images").identity["vocabulary"] == 16
    assert not (out / "tokens" / "videos").exists() and not list(out.glob("side_by_side-*.mp4"))


def test_encode_and_decode_default_to_the_shipped_models(tmp_path, capsys):
    photo, clip = sample_images()[0], sample_videos()[0]
    for source, name in ((photo, "default"), (clip, "default-video")):
        tokens, decoded = tmp_path / f"{name}-tokens", tmp_path / f"{name}-decoded"
        assert main(["encode", str(source), "--out", str(tokens), "--workers", "0"]) == 0
        run = json.loads((tokens / "run.json").read_text())
        assert run["tokenizer"]["weights_sha256"] == tokenizer_identity(load_tokenizer(name))["weights_sha256"]
        assert main(["decode", str(tokens), "--out", str(decoded)]) == 0
        assert len(list(decoded.iterdir())) == 1
        assert f"using the shipped tokenizer {name!r}" in capsys.readouterr().err


def _tiny_model() -> Tokenizer:
    config = TokenizerConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                             quantizer=VQConfig(codebook_size=16, dim=4))  # fmt: skip
    return Tokenizer(config).eval()


def test_decode_without_model_refuses_foreign_tokens(tmp_path, capsys):
    _tiny_model().save_pretrained(tmp_path / "tiny")
    tokens = tmp_path / "tokens"
    assert main(["encode", str(sample_images()[0]), "--model", str(tmp_path / "tiny"), "--out", str(tokens),
                 "--workers", "0"]) == 0  # fmt: skip
    assert main(["decode", str(tokens), "--out", str(tmp_path / "decoded")]) == 2
    assert "not made by a shipped tokenizer" in capsys.readouterr().err


def test_side_by_side_image_layout():
    red, blue = torch.ones(3, 4, 6), -torch.ones(3, 4, 6)
    red[1:] = -1
    view = np.asarray(side_by_side_image([(red, blue)] * 3, columns=2, gap=1))
    assert view.shape == (4 + 1 + 4, 2 * (6 + 1 + 6) + 1, 3)
    assert (view[:4, :6] == (255, 0, 0)).all() and (view[:4, 7:13] == 0).all()
    assert (view[:4, 6] == 255).all()  # the gap is white
    assert (view[5:, 14:] == 255).all()  # no fourth pair
    with pytest.raises(ValueError, match="at least one"):
        side_by_side_image([])


@pytest.mark.usefixtures("one_thread")
def test_held_out_flags_match_card_names_exactly_and_each_item_is_decoded_once(tmp_path, monkeypatch):
    """A card's name matches that file name only (not another extension of its stem); the report measures the
    reconstructions `decode` wrote, so the model decodes each image, and each token frame of a clip, once."""
    model_dir, video_dir = tmp_path / "tiny", tmp_path / "tiny-video"
    _tiny_model().save_pretrained(model_dir)
    small_video_model().save_pretrained(video_dir)
    card = {"train": ["a.png", "clip.mp4"], "held_out": ["b.png"]}
    for folder in (model_dir, video_dir):
        (folder / "card.json").write_text(json.dumps(card))
    rng = np.random.default_rng(0)
    images = []
    for name in ("a.png", "b.png", "b.jpg", "c.png"):  # b.jpg shares b.png's stem; c.png is on no list
        images.append(tmp_path / "in" / name)
        images[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images[-1])
    clip = make_test_clip(tmp_path / "in" / "clip.mp4", frames=9, width=32, height=32, fps=8)

    decoded = {"grids": 0}
    decode = Tokenizer.decode

    def counting_decode(self, indices):
        decoded["grids"] += indices.shape[0] * (indices.shape[1] if indices.ndim == 4 else 1)  # images, token frames
        return decode(self, indices)

    monkeypatch.setattr(Tokenizer, "decode", counting_decode)
    report = run_demo(tmp_path / "out", image_model=str(model_dir), video_model=str(video_dir), images=images,
                      videos=[clip], progress=False)  # fmt: skip
    flags = {Path(q.source).name: q.held_out for q in report.items}
    assert flags == {"a.png": False, "b.jpg": None, "b.png": True, "c.png": None, "clip.mp4": False}
    token_frames = TokenDataset(tmp_path / "out" / "tokens" / "videos")[0]["tokens"].shape[0]
    assert decoded["grids"] == len(images) + token_frames
    # and what was measured is what was written: the PNGs, up to 8-bit rounding
    for quality, written in zip(report.items, sorted((tmp_path / "out" / "reconstructions" / "images").iterdir())):
        original = load_for_tokenization(quality.source, ImagePreprocess(factor=8)).pixels
        psnr = metrics.psnr(original[None], to_tensor(Image.open(written))[None]).item()
        assert psnr == pytest.approx(quality.psnr, abs=0.1)
