"""Videos inside WebDataset tar shards: streamed from their place in the tar, tokenized as the loose file is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests._models import small_video_model
from tests._video_synth import make_test_clip
from tokenizer.data.containers import MemberError
from tokenizer.data.items import VideoSampling
from tokenizer.data.preprocess import ImagePreprocess
from tokenizer.data.tars import list_tar
from tokenizer.pipeline import EncodeOptions, encode_dataset
from tokenizer.tokens import TokenDataset

from .conftest import write_image, write_tar

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _shard(tmp_path: Path) -> tuple[Path, Path]:
    """A loose clip, and a shard holding it (with metadata) beside a cut-short mp4 and a webm of noise."""
    clip = make_test_clip(tmp_path / "clips" / "clip.mp4", frames=14, width=40, height=32, fps=10)
    data = clip.read_bytes()
    members = [("x/a.mp4", data), ("x/a.json", b'{"fps": 10}'), ("x/a.txt", b"shapes"), ("x/a.cls", b"3")]
    members += [("b.mp4", data[:600]), ("b.txt", b"cut short"), ("c.webm", bytes(range(256)) * 8)]
    return clip, write_tar(tmp_path / "shard.tar", members)


@pytest.mark.parametrize("clip_frames", [None, 5])  # whole videos (streamed in windows) and one clip
def test_a_video_member_gives_the_tokens_and_fields_of_the_loose_file(tmp_path, clip_frames):
    clip, tar = _shard(tmp_path)
    options = EncodeOptions(ImagePreprocess(size=32, factor=4), VideoSampling(clip_frames=clip_frames, window=8),
                            progress=False)  # fmt: skip
    model = small_video_model()
    summary = encode_dataset([tar], model, tmp_path / "tar", options)
    encode_dataset([clip], model, tmp_path / "loose", options)
    assert (summary.items, summary.errors) == (1, 2)

    (packed,), (loose,) = _rows(tmp_path / "tar" / "manifest.jsonl"), _rows(tmp_path / "loose" / "manifest.jsonl")
    assert packed.pop("source") == f"{tar}#x/a" and loose.pop("source") == str(clip)
    assert packed.pop("meta") == {"json": {"fps": 10}, "txt": "shapes", "cls": 3}
    assert packed == loose and packed["kind"] == "video"  # sha256, frames, windows, ... and the shape
    tokens = TokenDataset(tmp_path / "tar")[0]["tokens"]
    assert torch.equal(tokens, TokenDataset(tmp_path / "loose")[0]["tokens"])

    errors = {r["source"]: r for r in _rows(tmp_path / "tar" / "errors.jsonl")}
    assert set(errors) == {f"{tar}#b", f"{tar}#c"}
    assert all(r["kind"] == "unreadable" and f"{source}." in r["error"] for source, r in errors.items())


def test_a_video_member_is_bounded_by_the_video_limit_and_never_read_whole(tmp_path):
    clip, tar = _shard(tmp_path)
    sample = list_tar(tar)[0]
    payload = sample.read(max_bytes=100, max_video_bytes=clip.stat().st_size)  # the image limit does not apply
    assert payload.data == b"" and payload.extension == "mp4" and payload.meta["cls"] == 3
    assert str(payload.video) == f"{tar}#x/a.mp4" and payload.video.size == clip.stat().st_size
    with payload.video.open() as member:
        assert member.read() == clip.read_bytes()
    with pytest.raises(MemberError, match="over the limit") as raised:
        sample.read(max_bytes=1 << 30, max_video_bytes=clip.stat().st_size - 1)
    assert raised.value.kind == "too_large_file"

    gif = write_image(tmp_path / "still.gif", 8, 8, seed=1)  # a GIF is an image, in a tar as a loose file
    payload = list_tar(write_tar(tmp_path / "gif.tar", [("g.gif", gif.read_bytes())]))[0].read(1 << 20)
    assert payload.video is None and payload.data == gif.read_bytes()


def test_an_image_tokenizer_calls_a_big_video_unsupported_not_too_large(tmp_path):
    from tokenizer.data.items import InputReader

    clip, tar = _shard(tmp_path)
    limit = clip.stat().st_size - 1  # the video is over every limit
    sources = [list_tar(tar)[0], clip]
    preprocess = ImagePreprocess(size=32, factor=4)
    reader = InputReader(sources, preprocess, VideoSampling(), videos=False, max_file_bytes=limit)
    for i, source in enumerate([f"{tar}#x/a.mp4", str(clip)]):
        record = reader[i].record
        assert record["kind"] == "unsupported" and source in record["error"], record
    video_reader = InputReader(sources, preprocess, VideoSampling(), videos=True, max_file_bytes=limit)
    assert [video_reader[i].record["kind"] for i in range(2)] == ["too_large_file"] * 2  # a video model: over the limit
