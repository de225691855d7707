"""Tokenizer: shapes per quantizer and factor, encode/decode consistency, input checks, layout, saving."""

from __future__ import annotations

import json
import os

import pytest
import safetensors
import safetensors.torch
import torch

from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.quantizers import FSQConfig, LFQConfig, QuantizerOutput, ResidualConfig, VQConfig

QUANTIZERS = {
    "vq": VQConfig(codebook_size=32, dim=4),
    "fsq": FSQConfig(levels=(8, 5, 5, 5)),
    "lfq": LFQConfig(dim=5),
    "residual": ResidualConfig(VQConfig(codebook_size=16, dim=4), depth=3),
}


def tiny(kind: str = "vq", factor: int = 8, **overrides) -> TokenizerConfig:
    """ch=32, one block per level, attention at the lowest level of a 32-pixel image."""
    levels = factor.bit_length()
    kwargs = {
        "ch": 32,
        "ch_mult": (1,) * (levels - 1) + (2,),
        "num_res_blocks": 1,
        "resolution": 32,
        "attn_resolutions": (32 // factor,),
        "z_channels": 8,
        "quantizer": QUANTIZERS[kind],
    }
    return TokenizerConfig(**{**kwargs, **overrides})


@pytest.mark.parametrize("factor", [8, 16])
@pytest.mark.parametrize("kind", QUANTIZERS)
def test_shapes_and_encode_decode_match_forward(kind, factor):
    model = Tokenizer(tiny(kind, factor)).eval()
    height, width = (16, 24) if factor == 8 else (32, 16)
    x = torch.rand(2, 3, height, width) * 2 - 1
    grid = (2, height // factor, width // factor)
    depth = (3,) if kind == "residual" else ()
    with torch.no_grad():
        reconstruction, out = model(x)
        latents = model.encode_to_latents(x)
    assert isinstance(out, QuantizerOutput)
    assert reconstruction.shape == x.shape and reconstruction.dtype == torch.float32
    assert latents.shape == (*grid[:1], model.config.embed_dim, *grid[1:])
    assert out.indices.shape == grid + depth and torch.isfinite(out.loss)

    indices = model.encode(x)
    assert indices.dtype == torch.int64 and indices.shape == grid + depth
    assert int(indices.min()) >= 0 and int(indices.max()) < model.codebook_size
    torch.testing.assert_close(indices, out.indices, rtol=0, atol=0)
    with torch.no_grad():
        decoded = model.decode(indices)
        from_codes = model.decode_codes(model.quantize.indices_to_codes(indices))
    # forward's codes carry the straight-through z + (e - z): e up to one rounding, which the decoder's
    # GroupNorms over a few latent positions amplify a little
    torch.testing.assert_close(out.quantized, model.quantize.indices_to_codes(indices), rtol=0, atol=1e-6)
    torch.testing.assert_close(decoded, reconstruction, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_codes, decoded, rtol=0, atol=0)
    assert model.downsample_factor == factor


def test_codebook_sizes():
    assert Tokenizer(tiny("vq")).codebook_size == 32
    assert Tokenizer(tiny("fsq")).codebook_size == 8 * 5 * 5 * 5
    assert Tokenizer(tiny("lfq")).codebook_size == 2**5
    assert Tokenizer(tiny("residual")).codebook_size == 16


def test_training_step_reaches_encoder_and_last_layer():
    model = Tokenizer(tiny("vq", dropout=0.1)).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    reconstruction, out = model(x)
    ((reconstruction - x).square().mean() + out.loss).backward()
    assert model.last_layer is model.decoder.conv_out.weight
    assert model.last_layer.grad is not None and model.last_layer.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # straight through the quantizer
    assert bool(model.quantize.initialized)  # k-means ran on the training batch


def test_layout_uses_tamings_names():
    config = tiny("vq", ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(32, 8))
    names = set(Tokenizer(config).state_dict())
    for name in [
        "encoder.conv_in.weight",
        "encoder.down.0.block.1.conv2.bias",
        "encoder.down.0.attn.1.proj_out.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.1.downsample.conv.weight",
        "encoder.down.2.attn.0.q.weight",
        "encoder.mid.block_1.norm1.weight",
        "encoder.mid.attn_1.k.weight",
        "encoder.mid.block_2.conv1.weight",
        "encoder.norm_out.weight",
        "encoder.conv_out.bias",
        "quant_conv.weight",
        "post_quant_conv.bias",
        "decoder.conv_in.weight",
        "decoder.mid.attn_1.v.bias",
        "decoder.up.2.block.2.conv1.weight",
        "decoder.up.2.attn.2.norm.weight",
        "decoder.up.2.upsample.conv.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.0.attn.2.q.weight",
        "decoder.norm_out.bias",
        "decoder.conv_out.weight",
    ]:
        assert name in names, name
    absent = [
        "encoder.down.2.downsample",
        "decoder.up.0.upsample",
        "encoder.down.1.attn",
        "decoder.up.1.attn",
        "encoder.down.0.block.0.nin_shortcut",
        "decoder.up.2.block.3",
        "encoder.down.0.block.2",
    ]
    for prefix in absent:
        assert not any(n.startswith(prefix + ".") for n in names), prefix


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 20), (1, 3, 4, 8)], ids=str)
def test_height_and_width_must_be_multiples_of_the_factor(shape):
    model = Tokenizer(tiny("fsq", 8))
    for call in (model.encode, model.forward, model.encode_to_latents):
        with pytest.raises(ValueError, match=r"downsample factor 8") as info:
            call(torch.zeros(shape))
        assert str(shape) in str(info.value)


def test_bad_inputs():
    model = Tokenizer(tiny("vq")).eval()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode(torch.full((1, 2, 2), 32))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode(torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match=r"\[B, h, w\]"):
        model.decode(torch.zeros(1, 2, 2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model.decode(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, 4, h, w\]"):
        model.decode_codes(torch.zeros(1, 5, 2, 2))
    residual = Tokenizer(tiny("residual")).eval()
    with pytest.raises(ValueError, match=r"\[B, h, w, depth\]"):
        residual.decode(torch.zeros(1, 2, 2, 2, dtype=torch.long))
    # -1 drops a depth: decoding with the last depth dropped equals decoding the first two depths' codes
    ids = residual.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    truncated = ids.clone()
    truncated[..., 2] = -1
    codes = sum(residual.quantize.layer(m).indices_to_codes(ids[..., m]) for m in range(2))
    with torch.no_grad():
        torch.testing.assert_close(residual.decode(truncated), residual.decode_codes(codes))


def test_int32_indices_decode_like_int64():
    model = Tokenizer(tiny("fsq")).eval()
    ids = torch.randint(0, model.codebook_size, (2, 3, 2))
    with torch.no_grad():
        torch.testing.assert_close(model.decode(ids.int()), model.decode(ids), rtol=0, atol=0)


# --- save_pretrained / from_pretrained --------------------------------------------------------------------


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_save_and_load_round_trip(tmp_path, kind):
    model = Tokenizer(tiny(kind))
    x = torch.rand(2, 3, 16, 8) * 2 - 1
    model.train()(x)  # k-means init / EMA updates: a state unlike a fresh model's
    model.eval()
    model.save_pretrained(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["config.json", "model.safetensors"]  # no temp files left

    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    assert not loaded.training and loaded.config == model.config
    reference = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    with torch.no_grad():
        expected, out = model(x)
        got, got_out = loaded(x)
    assert torch.equal(got, expected) and torch.equal(got_out.indices, out.indices)
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_saved_files(tmp_path):
    model = Tokenizer(tiny("residual"))
    model.save_pretrained(str(tmp_path))
    text = (tmp_path / "config.json").read_text()
    assert text.startswith('{\n  "format": "tessera-tokenizer",\n  "version": 1,')
    data = json.loads(text)
    assert data["quantizer"]["kind"] == "residual" and data["quantizer"]["quantizer"]["kind"] == "vq"
    with safetensors.safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt" and metadata["tokenizer_format"] == "tessera-tokenizer"
    assert all(isinstance(v, str) for v in metadata.values())
    assert TokenizerConfig.from_dict(json.loads(metadata["config"])) == model.config


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_dtype_halves_the_file_and_keeps_the_codebook(tmp_path, dtype):
    model = Tokenizer(tiny("vq"))
    x = torch.rand(2, 3, 16, 8) * 2 - 1
    model.train()(x)  # a trained codebook and EMA statistics
    model.eval()
    model.save_pretrained(tmp_path / "fp32")
    model.save_pretrained(tmp_path / "half", weights_dtype=dtype)
    full, half = (os.path.getsize(tmp_path / d / "model.safetensors") for d in ("fp32", "half"))
    assert half < 0.55 * full
    stored = safetensors.torch.load_file(str(tmp_path / "half" / "model.safetensors"))
    for name, tensor in stored.items():
        original = model.state_dict()[name]
        if name.startswith("quantize.") or not original.is_floating_point():
            assert tensor.dtype == original.dtype and torch.equal(tensor, original), name
        else:
            assert tensor.dtype == dtype and torch.equal(tensor, original.to(dtype)), name

    loaded = Tokenizer.from_pretrained(tmp_path / "half")
    assert all(t.dtype == model.state_dict()[n].dtype for n, t in loaded.state_dict().items())
    with torch.no_grad():
        expected, got = model(x)[0], loaded(x)[0]
    assert (got - expected).abs().max() < (0.05 if dtype == torch.float16 else 0.3)


def test_failed_save_keeps_the_old_files(tmp_path, monkeypatch):
    first = Tokenizer(tiny("fsq"))
    first.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        Tokenizer(tiny("fsq")).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_shape_mismatch_names_the_tensors(tmp_path):
    Tokenizer(tiny("vq")).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["z_channels"] = 16
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="shape mismatches") as info:
        Tokenizer.from_pretrained(tmp_path)
    message = str(info.value)
    assert "encoder.conv_out.weight: checkpoint (8, 64, 3, 3), model (16, 64, 3, 3)" in message
    assert "decoder.conv_in.weight" in message and "quant_conv.weight" in message


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    Tokenizer(tiny("vq")).save_pretrained(tmp_path)
    path = str(tmp_path / "model.safetensors")
    state = safetensors.torch.load_file(path)
    del state["decoder.conv_out.bias"]
    state["decoder.extra.weight"] = torch.zeros(2, 3)
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as info:
        Tokenizer.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing tensors (1):\n  decoder.conv_out.bias (3,)" in message
    assert "unexpected tensors (1):\n  decoder.extra.weight (2, 3)" in message
    assert path in message


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    Tokenizer(tiny("lfq")).save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        Tokenizer.from_pretrained(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize(("key", "value", "match"), [("format", "other", "format"), ("version", 2, "version 2")])
def test_foreign_or_newer_configs_are_refused(tmp_path, key, value, match):
    Tokenizer(tiny("lfq")).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data[key] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_pretrained(tmp_path)


def test_norm_groups_reach_every_group_norm_and_round_trip(tmp_path):
    model = Tokenizer(tiny(norm_groups=8)).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and {m.num_groups for m in norms} == {8}
    model.save_pretrained(tmp_path)
    loaded = Tokenizer.from_pretrained(tmp_path).eval()
    assert loaded.config.norm_groups == 8
    pixels = torch.rand(1, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels)[0], model(pixels)[0])
    assert {m.num_groups for m in Tokenizer(tiny()).modules() if isinstance(m, torch.nn.GroupNorm)} == {32}
