"""The encode and decode progress bars count finished work (tokens made, files written), never items merely
read, and the summary's rates are the work over the time it took."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from tests._models import small_video_model
from tests._video_synth import make_test_clip
from tokenizer import _progress
from tokenizer.data.items import VideoSampling
from tokenizer.data.preprocess import ImagePreprocess
from tokenizer.data.sources import collect_inputs
from tokenizer.pipeline import EncodeOptions, encode_dataset
from tokenizer.reconstruct import decode_folder
from tokenizer.tokens import TokenDataset

from .conftest import tiny_model, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordingBar(_progress.tqdm):
    """The tqdm the bars use, remembering every instance; ``on_update`` sees the count after each update."""

    made: ClassVar[list[RecordingBar]] = []
    on_update = staticmethod(lambda n: None)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingBar.made.append(self)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        RecordingBar.on_update(self.n)
        return shown


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> type[RecordingBar]:
    monkeypatch.setattr(RecordingBar, "made", [])
    monkeypatch.setattr(_progress, "tqdm", RecordingBar)
    return RecordingBar


def _folder(root: Path) -> list[Path]:
    """Five images of two sizes and one unreadable file, sorted."""
    for i, (width, height) in enumerate([(32, 32), (40, 24), (32, 32), (40, 24), (32, 32)]):
        write_image(root / f"img{i}.png", width, height, seed=i)
    (root / "img5.png").write_bytes(b"not an image")
    return collect_inputs([root])


def test_encode_counts_an_item_when_its_tokens_exist_and_the_summary_rates_are_right(tmp_path, bars, monkeypatch):
    inputs = _folder(tmp_path / "in")
    model = tiny_model()
    made: list[int] = []  # items whose tokens the model has produced, after each call
    seen_at_call: list[float] = []  # the bar's count when the model starts a batch
    encode = model.encode

    def counting_encode(pixels: torch.Tensor) -> torch.Tensor:
        seen_at_call.append(bars.made[0].n)
        indices = encode(pixels)
        made.append((made[-1] if made else 0) + len(pixels))
        return indices

    monkeypatch.setattr(model, "encode", counting_encode)
    options = EncodeOptions(ImagePreprocess(factor=4), batch_size=2, workers=0, progress=True)
    summary = encode_dataset(inputs, model, tmp_path / "out", options)

    (bar,) = bars.made
    assert bar.total == len(inputs) == 6 and bar.n == 6
    # batches of 2 per shape: [img0, img2] once img2 is read, [img1, img3] once img3 is, and [img4] at the end,
    # after the bad img5 was recorded (it counts then: it needs no model)
    assert made == [2, 4, 5]
    assert seen_at_call == [0, 2, 5]  # not the 3, 4 and 6 items read by then
    assert summary.items == 5 and summary.errors == 1
    assert summary.pixels == 3 * 32 * 32 + 2 * 40 * 24 and summary.frames == 0
    assert summary.seconds > 0
    line = summary.line()
    assert f"({summary.items / summary.seconds:.3g} items/s" in line
    rate = float(re.search(r"\(([\d.]+) items/s", line)[1])
    assert rate > 0 and rate == pytest.approx(summary.items / summary.seconds, rel=1e-2)
    assert _progress.format_rate(summary.pixels, summary.seconds, "px") in line


def test_decode_counts_an_item_once_its_file_is_written(tmp_path, bars, monkeypatch):
    inputs = _folder(tmp_path / "in")
    model = tiny_model()
    tokens = tmp_path / "tokens"
    encode_dataset(inputs, model, tokens, EncodeOptions(ImagePreprocess(factor=4), workers=0, progress=False))
    out = tmp_path / "decoded"
    written_at_update: list[tuple[float, int]] = []
    monkeypatch.setattr(bars, "on_update", lambda n: written_at_update.append((n, len(list(out.glob("*.png"))))))
    bars.made.clear()
    decode_folder(tokens, model, out, batch_size=2)

    (bar,) = bars.made
    assert bar.total == 5 and bar.n == 5
    assert written_at_update == [(n, n) for n in range(1, 6)]  # each count follows its file, one at a time
    assert bar.postfix.endswith("px/s") and "frames/s" not in bar.postfix  # images: the pixel rate only


def test_videos_count_their_frames(tmp_path, bars):
    make_test_clip(tmp_path / "in" / "clip.mp4", frames=13, width=32, height=32, fps=8)
    model = small_video_model()
    options = EncodeOptions(ImagePreprocess(factor=4), VideoSampling(window=4), workers=0, progress=True)
    summary = encode_dataset(collect_inputs([tmp_path / "in"]), model, tmp_path / "tokens", options)
    assert summary.frames == 13 and summary.pixels == 13 * 32 * 32
    assert "frames/s" in summary.line()
    assert bars.made[0].n == 1

    decode_folder(tmp_path / "tokens", model, tmp_path / "decoded")
    decoder_bar = bars.made[1]
    assert decoder_bar.n == 1 and "frames/s" in decoder_bar.postfix
    assert TokenDataset(tmp_path / "tokens")[0]["frames"] == 13


def test_format_rate():
    assert _progress.format_rate(24, 440.0, "items") == "0.0545 items/s"
    assert _progress.format_rate(3_210_000, 1.0, "px") == "3.21 Mpx/s"
    assert _progress.format_rate(5, 0.0, "items") == "- items/s"
