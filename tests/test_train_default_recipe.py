"""The default-model recipe's own machinery (tools/train_default.py): moving a run between machines, the data
guard, the colour charts, fitting steps to a time budget and inflating image weights into a video model."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._models import small_video_model
from tokenizer.checkpoints import latest_checkpoint
from tokenizer.data.video_synth import make_test_clip
from tokenizer.models import Tokenizer, TokenizerConfig, load_tokenizer
from tokenizer.quantizers import FSQConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_default", ROOT / "tools" / "train_default.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _finished_stage(folder: Path, seed: int, steps: int) -> Tokenizer:
    torch.manual_seed(seed)
    config = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                             quantizer=FSQConfig(levels=(8, 5, 5), dim=3))  # fmt: skip
    model = Tokenizer(config).eval()
    model.save_pretrained(folder)
    (folder / "record.json").write_text(json.dumps({"steps": steps}) + "\n")
    return model


def test_pack_and_unpack_move_finished_stages_in_small_parts(recipe, tmp_path, monkeypatch):
    run, packed, back = tmp_path / "run", tmp_path / "packed", tmp_path / "back"
    (run / "comparison.json").parent.mkdir()
    (run / "comparison.json").write_text('{"fsq": {}}\n')
    image = _finished_stage(run / "default-final", seed=1, steps=10)
    small_video_model(seed=2).save_pretrained(run / "video-final")
    (run / "video-final" / "record.json").write_text('{"steps": 2}\n')
    monkeypatch.setattr(recipe, "PART_BYTES", 1 << 20)  # several parts for the video model
    (packed).mkdir()
    (packed / "video-final-09.safetensors").write_bytes(b"stale")  # a part left by an earlier, longer pack
    recipe.pack(run, packed)
    parts = sorted(p.name for p in packed.glob("video-final-*.safetensors"))
    assert len(parts) > 1 and "video-final-09.safetensors" not in parts
    assert all(p.stat().st_size <= (1 << 20) + (64 << 10) for p in packed.glob("*.safetensors"))  # + header
    recipe.unpack(packed, back)
    assert json.loads((back / "default-final" / "record.json").read_text()) == {"steps": 10}
    restored = load_tokenizer(back / "default-final")
    for name, tensor in image.state_dict().items():  # fp16 on the way: equal to fp16 precision
        torch.testing.assert_close(restored.state_dict()[name], tensor.half().float(), atol=0, rtol=0)
    video = load_tokenizer(back / "video-final")
    assert video.state_dict().keys() == small_video_model().state_dict().keys()
    (packed / parts[-1]).unlink()  # a lost part is named, not silently dropped
    with pytest.raises(SystemExit, match="parts of video-final found"):
        recipe.unpack(packed, tmp_path / "again")


def test_a_given_data_folder_must_be_prepared_and_is_never_emptied(recipe, tmp_path):
    photos = tmp_path / "my-photos"
    photos.mkdir()
    (photos / "keep.png").write_bytes(b"not really a png")
    with pytest.raises(SystemExit, match="not a folder this recipe prepared"):
        recipe.prepare_data(photos, given=True)
    assert (photos / "keep.png").is_file()
    (photos / "prepared.json").write_text('{"train": []}\n')
    recipe.prepare_data(photos, given=True)  # prepared: used as it is
    assert (photos / "keep.png").is_file()


def test_prepare_only_stops_after_the_data_and_continue_video_needs_the_shipped_image_model(recipe, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "prepared.json").write_text('{"train": []}\n')
    assert recipe.main(["--out", str(tmp_path / "run"), "--data", str(data), "--prepare-only"]) == 0
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
    with pytest.raises(SystemExit, match="--continue-video needs --from-shipped"):
        recipe.main(["--out", str(tmp_path / "run"), "--data", str(data), "--continue-video"])


def test_colour_charts_are_seeded_and_colourful(recipe):
    first, again = (np.asarray(recipe.colour_chart(random.Random(3), side=64)) for _ in range(2))
    assert np.array_equal(first, again) and first.shape == (64, 64, 3)
    charts = [np.asarray(recipe.colour_chart(random.Random(seed), side=64)).astype(float) for seed in range(12)]
    chroma = [np.abs(c - c.mean(axis=2, keepdims=True)).mean() for c in charts]
    assert sum(value > 5 for value in chroma) >= 6  # most charts carry saturated colour
    assert len({c.tobytes() for c in charts}) == len(charts)


@pytest.mark.parametrize(("seconds", "rate", "steps"), [(200, 16.47, 3200), (250, 5.6, 1400), (1, 1.0, 100)])
def test_steps_fit_a_time_budget_in_hundreds(recipe, seconds, rate, steps):
    assert recipe.steps_to_fit(seconds, rate) == steps


def test_an_inflated_video_model_starts_as_the_image_model_on_a_still_frame(recipe):
    video = small_video_model()
    torch.manual_seed(0)
    fields = {f.name: getattr(video.config, f.name) for f in dataclasses.fields(TokenizerConfig)}
    image = Tokenizer(TokenizerConfig(**fields)).eval()
    video.load_state_dict(recipe.inflate(image.state_dict(), video.state_dict()))
    frame = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = image(frame)[0]
        got = video(frame[:, :, None])[0][:, :, 0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_run_can_start_from_the_shipped_models(recipe, tmp_path):
    recipe.from_shipped(tmp_path / "run")
    shipped = load_tokenizer("default")
    restored = load_tokenizer(tmp_path / "run" / "default-final")
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
    card = json.loads((recipe.ASSETS / "default" / "card.json").read_text())
    assert json.loads((tmp_path / "run" / "comparison.json").read_text()) == card["comparison"]
    record = json.loads((tmp_path / "run" / "default-final" / "record.json").read_text())
    assert record["steps"] == card["steps"] and record["quantizer"] == card["quantizer"]
    assert recipe.shipped_record(recipe.ASSETS / "default-video")["model"] == "default-video"


def test_the_video_learning_rate_reaches_the_run_and_its_record(recipe, tmp_path):
    model = recipe.image_config("fsq")
    assert recipe.train_config(tmp_path, model, tmp_path, 100, recipe.Budget()).optim.lr == recipe.LR
    out, data = tmp_path / "run", tmp_path / "data"
    recipe.from_shipped(out)
    make_test_clip(data / "videos" / "clip.mp4", frames=12, width=64, height=64, fps=8, gop=4)
    recipe.train_video(out, data, 1, None, recipe.Budget(batch_size=2, workers=0), lr=3e-4)
    _, last = latest_checkpoint(out / "video")
    trained = json.loads(torch.load(last / "trainer.pt", weights_only=False)["config"])
    assert trained["optim"]["lr"] == 3e-4
    assert json.loads((out / "video-final" / "record.json").read_text())["lr"] == 3e-4
    with pytest.raises(SystemExit, match="--video-lr must be a positive"):
        recipe.main(["--out", str(out), "--video-lr", "0"])
