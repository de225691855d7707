"""Tokenizer.from_taming against an independent functional re-implementation of taming's VQGAN.

The test writes the checkpoint itself, in taming's layout (Lightning dict, ``loss.*`` tensors), from its
own description of the architecture; the reference forward below reads the raw state dict with
``torch.nn.functional`` only, following taming-transformers' ``diffusionmodules/model.py``.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.models.formats import inspect_checkpoint, load_checkpoint
from tokenizer.quantizers import LFQConfig, VQConfig

# The checkpoint's architecture: three levels (f4), channel changes (nin_shortcut), attention at levels 0 and 2.
CH, CH_MULT, NUM_RES_BLOCKS, ATTN_LEVELS = 32, (1, 2, 2), 2, (0, 2)
Z_CHANNELS, EMBED_DIM, N_EMBED = 8, 4, 16


class Opaque:
    """A non-tensor object a Lightning checkpoint might pickle (hyper-parameters, callback state); it notes
    every time unpickling restores one, so a test can tell whether its code ran."""

    restored: ClassVar[list[dict]] = []

    def __init__(self, value: int) -> None:
        self.value = value

    def __setstate__(self, state: dict) -> None:
        Opaque.restored.append(state)
        self.__dict__.update(state)


# --- writing a taming checkpoint ----------------------------------------------------------------------------


def _taming_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, c_out, c_in, k):
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c_out, generator=g)

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_out, c_in, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_out, c_in, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    last = len(CH_MULT) - 1
    conv("encoder.conv_in", CH, 3, 3)
    c = CH
    for i, m in enumerate(CH_MULT):
        for j in range(NUM_RES_BLOCKS):
            resnet(f"encoder.down.{i}.block.{j}", c, CH * m)
            c = CH * m
            if i in ATTN_LEVELS:
                attn(f"encoder.down.{i}.attn.{j}", c)
        if i != last:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    mid("encoder.mid", c)
    norm("encoder.norm_out", c)
    conv("encoder.conv_out", Z_CHANNELS, c, 3)

    c = CH * CH_MULT[-1]
    conv("decoder.conv_in", c, Z_CHANNELS, 3)
    mid("decoder.mid", c)
    for i in reversed(range(len(CH_MULT))):
        for j in range(NUM_RES_BLOCKS + 1):
            resnet(f"decoder.up.{i}.block.{j}", c, CH * CH_MULT[i])
            c = CH * CH_MULT[i]
            if i in ATTN_LEVELS:
                attn(f"decoder.up.{i}.attn.{j}", c)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", 3, c, 3)

    conv("quant_conv", EMBED_DIM, Z_CHANNELS, 1)
    conv("post_quant_conv", Z_CHANNELS, EMBED_DIM, 1)
    sd["quantize.embedding.weight"] = torch.randn(N_EMBED, EMBED_DIM, generator=g)
    # what the VQGAN's training loss adds: LPIPS and the patch discriminator
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=g)
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    sd["loss.discriminator.main.0.bias"] = torch.randn(64, generator=g)
    return sd


def _lightning(sd: dict[str, torch.Tensor], **extra) -> dict:
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.0.8", "state_dict": sd, **extra}


# --- the reference forward ----------------------------------------------------------------------------------


def _swish(x):
    return x * torch.sigmoid(x)


def _norm(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _conv(sd, name, x, stride=1):
    weight = sd[f"{name}.weight"]
    padding = weight.shape[-1] // 2 if stride == 1 else 0
    return F.conv2d(x, weight, sd[f"{name}.bias"], stride=stride, padding=padding)


def _resnet(sd, name, x):
    h = _conv(sd, f"{name}.conv1", _swish(_norm(sd, f"{name}.norm1", x)))
    h = _conv(sd, f"{name}.conv2", _swish(_norm(sd, f"{name}.norm2", h)))
    if f"{name}.nin_shortcut.weight" in sd:
        x = _conv(sd, f"{name}.nin_shortcut", x)
    return x + h


def _attn(sd, name, x):
    h = _norm(sd, f"{name}.norm", x)
    q, k, v = (_conv(sd, f"{name}.{part}", h) for part in "qkv")
    b, c, height, width = q.shape
    weights = torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c**-0.5  # [b, hw_q, hw_k]
    weights = torch.softmax(weights, dim=2)
    out = torch.bmm(v.reshape(b, c, -1), weights.permute(0, 2, 1)).reshape(b, c, height, width)
    return x + _conv(sd, f"{name}.proj_out", out)


def _mid(sd, name, h):
    return _resnet(sd, f"{name}.block_2", _attn(sd, f"{name}.attn_1", _resnet(sd, f"{name}.block_1", h)))


def _reference_encode(sd, x):
    h = _conv(sd, "encoder.conv_in", x)
    for i in range(len(CH_MULT)):
        for j in range(NUM_RES_BLOCKS):
            h = _resnet(sd, f"encoder.down.{i}.block.{j}", h)
            if i in ATTN_LEVELS:
                h = _attn(sd, f"encoder.down.{i}.attn.{j}", h)
        if i != len(CH_MULT) - 1:
            h = _conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2)
    h = _mid(sd, "encoder.mid", h)
    return _conv(sd, "quant_conv", _conv(sd, "encoder.conv_out", _swish(_norm(sd, "encoder.norm_out", h))))


def _reference_decode(sd, z):
    h = _mid(sd, "decoder.mid", _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z)))
    for i in reversed(range(len(CH_MULT))):
        for j in range(NUM_RES_BLOCKS + 1):
            h = _resnet(sd, f"decoder.up.{i}.block.{j}", h)
            if i in ATTN_LEVELS:
                h = _attn(sd, f"decoder.up.{i}.attn.{j}", h)
        if i != 0:
            h = _conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv(sd, "decoder.conv_out", _swish(_norm(sd, "decoder.norm_out", h)))


def _reference(sd, x):
    """Taming's VQModel: indices [B, h, w], squared distances [B*h*w, K], reconstruction."""
    z = _reference_encode(sd, x)
    rows = z.permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
    e = sd["quantize.embedding.weight"]
    d = rows.square().sum(1, keepdim=True) + e.square().sum(1) - 2 * rows @ e.T
    index = d.argmin(1)
    codes = e[index].reshape(z.shape[0], z.shape[2], z.shape[3], EMBED_DIM).permute(0, 3, 1, 2)
    return index.reshape(z.shape[0], z.shape[2], z.shape[3]), d, _reference_decode(sd, codes)


# --- tests --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sd = _taming_state_dict()
    path = tmp_path_factory.mktemp("taming") / "last.ckpt"
    torch.save(_lightning(sd), path)
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        reference = _reference(sd, x)
    return path, sd, x, reference


def test_inferred_config(checkpoint):
    model = Tokenizer.from_taming(checkpoint[0])
    assert model.config == TokenizerConfig(
        ch=CH,
        ch_mult=CH_MULT,
        num_res_blocks=NUM_RES_BLOCKS,
        attn_resolutions=(256, 64),
        resolution=256,
        z_channels=Z_CHANNELS,
        dropout=0.0,
        quantizer=VQConfig(
            codebook_size=N_EMBED,
            dim=EMBED_DIM,
            update="grad",
            kmeans_init=False,
            dead_code_threshold=0.0,
            commitment_weight=1.0,  # taming's legacy beta: 0.25 weighs the codebook term
            codebook_weight=0.25,
            metric="l2",
        ),
        mid_attention=True,
    )
    assert model.config.attention_levels == ATTN_LEVELS and model.downsample_factor == 4
    assert not model.training


def test_reproduces_tamings_reconstruction(checkpoint):
    path, sd, x, (ref_indices, distances, ref_reconstruction) = checkpoint
    # the comparison of indices is only meaningful without near-ties
    two_best = distances.topk(2, dim=1, largest=False).values
    assert (two_best[:, 1] - two_best[:, 0]).min() > 1e-3

    model = Tokenizer.from_taming(path)
    torch.testing.assert_close(model.quantize.codebook.detach(), sd["quantize.embedding.weight"], rtol=0, atol=0)
    indices = model.encode(x)
    torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)
    with torch.no_grad():
        reconstruction, out = model(x)
        decoded = model.decode(indices)
    torch.testing.assert_close(out.indices, ref_indices, rtol=0, atol=0)
    assert ref_reconstruction.abs().max() > 0.1  # a signal worth comparing
    torch.testing.assert_close(reconstruction, ref_reconstruction, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decoded, ref_reconstruction, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_to_latents(x), _reference_encode(sd, x), rtol=1e-5, atol=1e-5)


def test_training_keeps_the_imported_codebook(checkpoint):
    model = Tokenizer.from_taming(checkpoint[0]).train()
    model(checkpoint[2])
    assert bool(model.quantize.initialized)
    torch.testing.assert_close(model.quantize.codebook.detach(), checkpoint[1]["quantize.embedding.weight"])


def test_bare_state_dict_and_explicit_ema_config(tmp_path, checkpoint):
    _, sd, x, (ref_indices, _, _) = checkpoint
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    inferred = Tokenizer.from_taming(bare).config
    config = dataclasses.replace(inferred, quantizer=VQConfig(codebook_size=N_EMBED, dim=EMBED_DIM))
    model = Tokenizer.from_taming(bare, config=config)  # EMA codebook with k-means init
    q = model.quantize
    assert bool(q.initialized)  # the imported codebook is not re-initialised by k-means
    torch.testing.assert_close(q.embed_sum, q.codebook * q.cluster_size[:, None])
    torch.testing.assert_close(model.encode(x), ref_indices, rtol=0, atol=0)


def test_mismatched_config_names_the_tensors(checkpoint):
    config = Tokenizer.from_taming(checkpoint[0]).config
    wrong = dataclasses.replace(config, z_channels=16)
    with pytest.raises(ValueError, match=r"quant_conv\.weight: checkpoint \(4, 8, 1, 1\), model \(4, 16, 1, 1\)"):
        Tokenizer.from_taming(checkpoint[0], config=wrong)
    with pytest.raises(TypeError, match="VQConfig"):
        Tokenizer.from_taming(checkpoint[0], config=dataclasses.replace(config, quantizer=LFQConfig(dim=EMBED_DIM)))


def test_unexpected_tensors_are_named(tmp_path):
    sd = _taming_state_dict()
    sd["quantize.temperature"] = torch.ones(N_EMBED)  # no such tensor in any taming quantizer
    del sd["decoder.norm_out.bias"]
    path = tmp_path / "odd.ckpt"
    torch.save(_lightning(sd), path)
    with pytest.raises(ValueError) as info:
        Tokenizer.from_taming(path)
    assert "quantize.temperature (16,)" in str(info.value) and "decoder.norm_out.bias (32,)" in str(info.value)


def test_remap_table_and_ema_copy_are_dropped(tmp_path, checkpoint):
    _, sd, x, (ref_indices, _, ref_reconstruction) = checkpoint
    extra = dict(sd)
    extra["quantize.used"] = torch.arange(N_EMBED - 4)  # VectorQuantizer2(remap=...): renumbers the indices
    extra["model_ema.decay"] = torch.tensor(0.999)  # latent-diffusion's LitEma (use_ema=True)
    extra["model_ema.encoderconv_inweight"] = sd["encoder.conv_in.weight"] + 1
    path = tmp_path / "remap.ckpt"
    torch.save(_lightning(extra), path)
    with pytest.warns(UserWarning, match="quantize.used"):
        model = load_checkpoint(path)
    indices = model.encode(x)
    torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)  # full-codebook numbering
    with torch.no_grad():
        torch.testing.assert_close(model.decode(indices), ref_reconstruction, rtol=1e-5, atol=1e-5)


def test_legacy_loss_weights(checkpoint):
    """Taming's VectorQuantizer2(legacy=True): ``mean((sg(e) - z)^2) + beta * mean((e - sg(z))^2)``.
    Both terms have the same value, so the weights show in the gradients: ``dL/dz = 2 (z - e) / n`` and
    ``dL/de = 2 beta (e - z) / n`` summed over the positions using ``e``."""
    path, sd, x, _ = checkpoint
    model = Tokenizer.from_taming(path).train()
    with torch.no_grad():
        z = model.encode_to_latents(x)
    z.requires_grad_(True)
    out = model.quantize(z)
    out.loss.backward()
    beta, e = 0.25, sd["quantize.embedding.weight"]
    codes = e[out.indices].permute(0, 3, 1, 2)
    n = z.numel()
    torch.testing.assert_close(out.loss, (1 + beta) * (codes - z.detach()).square().mean())
    torch.testing.assert_close(z.grad, 2 * (z.detach() - codes) / n)
    rows = (codes - z.detach()).permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
    expected = torch.zeros_like(e).index_add_(0, out.indices.reshape(-1), 2 * beta * rows / n)
    torch.testing.assert_close(model.quantize.codebook.grad, expected)


def test_inspect_names_the_variant(checkpoint):
    description = inspect_checkpoint(checkpoint[0]).description
    assert description == "taming-transformers / latent-diffusion VQModel (f4, 16 codes of dim 4)"


def test_pickled_objects_load_without_running(tmp_path, checkpoint):
    _, sd, x, (ref_indices, _, _) = checkpoint
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(_lightning(sd, hyper_parameters=Opaque(7)), unsafe)
    pickle.loads(pickle.dumps(Opaque(1)))  # the control: unpickling an Opaque runs its __setstate__
    assert Opaque.restored == [{"value": 1}]
    Opaque.restored.clear()
    model = Tokenizer.from_taming(unsafe)  # weights_only refuses the file; the restricted reader does not
    assert Opaque.restored == []
    torch.testing.assert_close(model.encode(x), ref_indices, rtol=0, atol=0)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.ckpt"):
        Tokenizer.from_taming(tmp_path / "absent.ckpt")
    torch.save({"state_dict": {"encoder.conv_in.weight": [1, 2]}}, tmp_path / "odd.ckpt")
    with pytest.raises(ValueError, match=r"odd\.ckpt' holds no state dict.*'encoder.conv_in.weight': list"):
        Tokenizer.from_taming(tmp_path / "odd.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.ckpt' is empty"):
        Tokenizer.from_taming(tmp_path / "empty.ckpt")
