"""The causal video tokenizer: shapes, causality, image = 1-frame video, windowed = one-shot, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenizer import load_tokenizer
from tokenizer.models import VideoTokenizer, VideoTokenizerConfig, config_from_dict, config_to_dict
from tokenizer.models.causal import CausalConv3d, streaming
from tokenizer.quantizers import FSQConfig, LFQConfig, ResidualConfig, VQConfig

QUANTIZERS = {
    "vq": VQConfig(codebook_size=64, dim=8, kmeans_init=False),
    "fsq": FSQConfig(levels=(8, 5, 5, 5), dim=8),
    "lfq": LFQConfig(dim=8),
    "residual": ResidualConfig(FSQConfig(levels=(5, 5, 5), dim=8), depth=2),
}


def tiny(quantizer: str = "fsq", temporal_factor: int = 4, ch_mult=(1, 2, 2)) -> VideoTokenizerConfig:
    return VideoTokenizerConfig(
        ch=32, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=(8,), resolution=32, z_channels=8,
        temporal_factor=temporal_factor, quantizer=QUANTIZERS[quantizer],
    )  # fmt: skip


def clip(frames: int, size: int = 32, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, frames, size, size) * 2 - 1


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_shapes_for_every_quantizer(quantizer):
    model = VideoTokenizer(tiny(quantizer)).eval()
    depth = (2,) if quantizer == "residual" else ()
    for frames, token_frames in ((1, 1), (5, 2), (9, 3), (17, 5)):
        ids = model.encode(clip(frames))
        assert ids.shape == (1, token_frames, 8, 8, *depth)
        assert model.decode(ids).shape == (1, 3, frames, 32, 32)
    reconstruction, out = model(clip(9, batch=2))
    assert reconstruction.shape == (2, 3, 9, 32, 32) and out.indices.shape == (2, 3, 8, 8, *depth)


@pytest.mark.parametrize("temporal_factor", [1, 2, 4])
def test_temporal_factors(temporal_factor):
    model = VideoTokenizer(tiny(temporal_factor=temporal_factor)).eval()
    frames = 1 + 2 * temporal_factor
    assert model.encode(clip(frames)).shape[1] == 3
    assert model.frames_for(3) == frames


def test_causality_later_frames_never_change_earlier_tokens():
    model = VideoTokenizer(tiny()).eval()
    video = clip(17)
    changed = video.clone()
    changed[:, :, 9:] = torch.rand_like(changed[:, :, 9:])  # frames 9.. belong to token frames 3 and 4
    with torch.no_grad():
        before, after = model.encode_to_latents(video), model.encode_to_latents(changed)
    assert torch.equal(before[:, :, :3], after[:, :, :3])
    assert not torch.allclose(before[:, :, 3:], after[:, :, 3:])
    # The decoder is causal too: frames 0..8 come from token frames 0..2 only.
    ids, ids_changed = model.encode(video), model.encode(changed)
    ids_changed[:, :3] = ids[:, :3]
    with torch.no_grad():
        assert torch.equal(model.decode(ids)[:, :, :9], model.decode(ids_changed)[:, :, :9])


def test_an_image_is_a_one_frame_video():
    model = VideoTokenizer(tiny()).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        image_latents = model.encode_to_latents(images)
        video_latents = model.encode_to_latents(images[:, :, None])
        # 2-D and 3-D convolutions sum in different orders: equal up to fp32 rounding of ~40-term sums
        torch.testing.assert_close(image_latents, video_latents[:, :, 0], rtol=1e-4, atol=1e-4)
        assert torch.equal(model.encode(images), model.encode(images[:, :, None])[:, 0])
        torch.testing.assert_close(model.decode(model.encode(images)), model.decode(model.encode(images[:, :, None]))[:, :, 0],
                                   rtol=1e-4, atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("windows", [[5, 8, 4], [1, 4, 4, 8], [17]])
def test_windowed_encoding_equals_one_shot(windows):
    model = VideoTokenizer(tiny()).eval()
    video = clip(17)
    chunks, start = [], 0
    for length in windows:
        chunks.append(video[:, :, start : start + length])
        start += length
    with torch.no_grad():
        with streaming(model):
            streamed = torch.cat([model.encoder(c) for c in chunks], dim=2)
        torch.testing.assert_close(streamed, model.encoder(video), rtol=0, atol=2e-5)
    windowed = torch.cat(list(model.encode_windows(chunks)), dim=1)
    assert torch.equal(windowed, model.encode(video))
    token_windows = [windowed[:, :2], windowed[:, 2:3], windowed[:, 3:]]
    decoded = torch.cat(list(model.decode_windows(token_windows)), dim=2)
    with torch.no_grad():
        torch.testing.assert_close(decoded, model.decode(windowed), rtol=0, atol=2e-5)


def test_an_open_stream_never_changes_encode_or_decode():
    model = VideoTokenizer(tiny()).eval()
    fresh = VideoTokenizer(tiny()).eval()
    fresh.load_state_dict(model.state_dict())
    video = clip(9)
    encoder = model.encode_windows([video[:, :, :5], video[:, :, 5:]])
    decoder = model.decode_windows([fresh.encode(video)[:, :2]])
    next(encoder), next(decoder)  # both generators stay open (suspended) while the model is used again
    ids = model.encode(video)
    assert ids.shape[1] == 3 and torch.equal(ids, fresh.encode(video))
    with torch.no_grad():
        assert torch.equal(model.decode(ids), fresh.decode(ids))


def test_interleaved_streams_each_give_their_video():
    model = VideoTokenizer(tiny()).eval()
    videos = [clip(13), clip(13)]
    one_shot = [model.encode(video) for video in videos]
    streams = [model.encode_windows([video[:, :, :5], video[:, :, 5:9], video[:, :, 9:]]) for video in videos]
    parts = [[], []]
    for _ in range(3):  # window 1 of A, window 1 of B, window 2 of A, ...
        for which in (0, 1):
            parts[which].append(next(streams[which]))
    for which in (0, 1):
        assert torch.equal(torch.cat(parts[which], dim=1), one_shot[which])
    assert not torch.equal(one_shot[0], one_shot[1])
    pixels = [model.decode_windows([ids[:, :2], ids[:, 2:]]) for ids in one_shot]
    decoded = [[next(pixels[0]), next(pixels[1])], [next(pixels[0]), next(pixels[1])]]
    with torch.no_grad():
        for which in (0, 1):
            whole = torch.cat([decoded[0][which], decoded[1][which]], dim=2)
            torch.testing.assert_close(whole, model.decode(one_shot[which]), rtol=0, atol=2e-5)


def test_streaming_conv_matches_one_pass_for_any_chunking():
    torch.manual_seed(3)
    for stride in (1, 2, 3):
        conv = CausalConv3d(4, 6, 3, stride=(stride, 1))
        x = torch.randn(2, 4, 11, 5, 5)
        with torch.no_grad():
            whole = conv(x)
            for cuts in ([3, 8], [1, 2, 3, 5], [10]):
                with streaming(conv):
                    parts = [conv(c) for c in torch.tensor_split(x, cuts, dim=2)]
                torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=2e-5)
        assert whole.shape[2] == len(range(0, 11, stride))


def test_bad_clip_lengths_and_windows_are_clear_errors():
    model = VideoTokenizer(tiny()).eval()
    with pytest.raises(ValueError, match=r"1 \+ k \* 4 frames"):
        model.encode(clip(8))
    with pytest.raises(ValueError, match="first window"):
        list(model.encode_windows([clip(4)]))
    with pytest.raises(ValueError, match="later window"):
        list(model.encode_windows([clip(5), clip(3)]))
    with pytest.raises(ValueError, match="temporal_factor"):
        tiny(temporal_factor=3)
    with pytest.raises(ValueError, match="temporal_factor"):
        tiny(temporal_factor=8)  # two downsamplings cannot halve time three times


def test_save_load_and_config_tags(tmp_path):
    model = VideoTokenizer(tiny("vq")).eval()
    model.save_pretrained(tmp_path / "video")
    loaded = load_tokenizer(tmp_path / "video")
    assert type(loaded) is VideoTokenizer and loaded.config == model.config
    video = clip(5)
    assert torch.equal(loaded.encode(video), model.encode(video))
    assert config_from_dict(config_to_dict(model.config)) == model.config
    from tokenizer import Tokenizer

    with pytest.raises(ValueError, match="video tokenizer"):
        Tokenizer.from_pretrained(tmp_path / "video")


def test_norm_groups_reach_every_frame_norm():
    config = dataclasses.replace(tiny(), norm_groups=16)
    norms = [m for m in VideoTokenizer(config).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {16}
