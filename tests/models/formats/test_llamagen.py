"""LlamaGen VQ checkpoints through ``load_checkpoint`` against an independent reference of LlamaGen's VQModel.

The test writes checkpoints itself, in LlamaGen's native container (``torch.save`` of ``{"model": ...}``, with
``"ema"``, optimizer and discriminator entries where a training run has them) and LlamaGen's parameter names
(``conv_blocks.{i}.res.{j}``, ``mid.{0,1,2}``, decoder levels in run order, ``quantize.codebook_used``). The
reference below is a functional re-implementation written from reading LlamaGen's
``tokenizer/tokenizer_image/vq_model.py`` (not a copy of it, and sharing no code with our model): it runs the
raw LlamaGen state dict with ``torch.nn.functional`` only, including LlamaGen's l2-normalised codebook search
and its decoding from the normalised codebook row.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from tokenizer.models.config import TokenizerConfig
from tokenizer.models.formats import (
    detect_family,
    inspect_checkpoint,
    llamagen,
    load_checkpoint,
    read_checkpoint,
    taming,
)
from tokenizer.models.tokenizer import Tokenizer
from tokenizer.quantizers import VQConfig

CH, Z_CHANNELS, N_EMBED, EMBED_DIM = 32, 16, 64, 8
# (ch_mult, num_res_blocks): ds4-like with a width change (nin_shortcut), and ds2 with one block per level
ARCHS = {"ds4": ((1, 1, 2), 2), "ds2": ((1, 2), 1)}


# --- writing a LlamaGen checkpoint --------------------------------------------------------------------------


def _llamagen_state_dict(ch_mult, num_res_blocks, seed=0, decoder_ch_mult=None) -> dict[str, torch.Tensor]:
    """Random weights in LlamaGen's VQModel layout; the codebook rows have norms far from 1."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, c_out, c_in, k):
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c_out, generator=g)

    def norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)

    def res(name, c_in, c_out):
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
        res(f"{name}.0", c, c)
        attn(f"{name}.1", c)
        res(f"{name}.2", c, c)

    n = len(ch_mult)
    conv("encoder.conv_in", CH, 3, 3)
    c = CH
    for i, m in enumerate(ch_mult):
        for j in range(num_res_blocks):
            res(f"encoder.conv_blocks.{i}.res.{j}", c, CH * m)
            c = CH * m
            if i == n - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", c)
        if i != n - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", c, c, 3)
    mid("encoder.mid", c)
    norm("encoder.norm_out", c)
    conv("encoder.conv_out", Z_CHANNELS, c, 3)

    dec_mult = decoder_ch_mult or ch_mult
    c = CH * dec_mult[-1]
    conv("decoder.conv_in", c, Z_CHANNELS, 3)
    mid("decoder.mid", c)
    for k, level in enumerate(reversed(range(n))):  # conv_blocks in run order: lowest resolution first
        for j in range(num_res_blocks + 1):
            res(f"decoder.conv_blocks.{k}.res.{j}", c, CH * dec_mult[level])
            c = CH * dec_mult[level]
            if k == 0:
                attn(f"decoder.conv_blocks.{k}.attn.{j}", c)
        if level != 0:
            conv(f"decoder.conv_blocks.{k}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c)
    conv("decoder.conv_out", 3, c, 3)

    conv("quant_conv", EMBED_DIM, Z_CHANNELS, 1)
    conv("post_quant_conv", Z_CHANNELS, EMBED_DIM, 1)
    scale = 0.2 + 3 * torch.rand(N_EMBED, 1, generator=g)
    sd["quantize.embedding.weight"] = torch.randn(N_EMBED, EMBED_DIM, generator=g) * scale
    sd["quantize.codebook_used"] = torch.randint(0, N_EMBED, (65536,), generator=g).float()
    return sd


def _training_container(model_sd, ema_sd=None) -> dict:
    """What LlamaGen's vq_train.py saves, including its ``argparse.Namespace`` (read without unpickling it)."""
    out = {
        "model": model_sd,
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "discriminator": {"main.0.weight": torch.randn(8, 3, 4, 4), "main.0.bias": torch.zeros(8)},
        "optimizer_disc": {"state": {}, "param_groups": []},
        "steps": 5000,
        "args": argparse.Namespace(vq_model="VQ-16", codebook_size=N_EMBED, codebook_embed_dim=EMBED_DIM, ema=True),
    }
    if ema_sd is not None:
        out["ema"] = ema_sd
    return out


# --- the reference forward, on LlamaGen's names -------------------------------------------------------------


def _swish(x):
    return x * torch.sigmoid(x)


def _gn(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _conv(sd, name, x, stride=1, padding=None):
    weight = sd[f"{name}.weight"]
    pad = weight.shape[-1] // 2 if padding is None else padding
    return F.conv2d(x, weight, sd[f"{name}.bias"], stride=stride, padding=pad)


def _res(sd, name, x):
    h = _conv(sd, f"{name}.conv1", _swish(_gn(sd, f"{name}.norm1", x)))
    h = _conv(sd, f"{name}.conv2", _swish(_gn(sd, f"{name}.norm2", h)))  # dropout: identity in eval
    shortcut = _conv(sd, f"{name}.nin_shortcut", x) if f"{name}.nin_shortcut.weight" in sd else x
    return shortcut + h


def _attn(sd, name, x):
    b, c, height, width = x.shape
    h = _gn(sd, f"{name}.norm", x)
    q, k, v = (_conv(sd, f"{name}.{p}", h).flatten(2) for p in ("q", "k", "v"))  # [b, c, hw]
    scores = torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c)  # [b, hw_query, hw_key]
    out = torch.einsum("bij,bcj->bci", scores.softmax(dim=-1), v).reshape(b, c, height, width)
    return x + _conv(sd, f"{name}.proj_out", out)


def _mid(sd, name, h):
    return _res(sd, f"{name}.2", _attn(sd, f"{name}.1", _res(sd, f"{name}.0", h)))


def _level_count(sd, part):
    return 1 + max(int(k.split(".")[2]) for k in sd if k.startswith(f"{part}.conv_blocks."))


def _blocks(sd, prefix):
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})


def _reference_latents(sd, x):
    """LlamaGen's encoder + quant_conv: ``[B, d, H/f, W/f]``."""
    h = _conv(sd, "encoder.conv_in", x)
    n = _level_count(sd, "encoder")
    for i in range(n):
        for j in _blocks(sd, f"encoder.conv_blocks.{i}.res."):
            h = _res(sd, f"encoder.conv_blocks.{i}.res.{j}", h)
            if f"encoder.conv_blocks.{i}.attn.{j}.q.weight" in sd:
                h = _attn(sd, f"encoder.conv_blocks.{i}.attn.{j}", h)
        if i < n - 1:  # zero-pad right and bottom, then a stride-2 valid conv
            h = _conv(sd, f"encoder.conv_blocks.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = _conv(sd, "encoder.conv_out", _swish(_gn(sd, "encoder.norm_out", _mid(sd, "encoder.mid", h))))
    return _conv(sd, "quant_conv", h)


def _reference_decode(sd, codes):
    h = _mid(sd, "decoder.mid", _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", codes)))
    n = _level_count(sd, "decoder")
    for k in range(n):
        for j in _blocks(sd, f"decoder.conv_blocks.{k}.res."):
            h = _res(sd, f"decoder.conv_blocks.{k}.res.{j}", h)
            if f"decoder.conv_blocks.{k}.attn.{j}.q.weight" in sd:
                h = _attn(sd, f"decoder.conv_blocks.{k}.attn.{j}", h)
        if k < n - 1:
            h = _conv(sd, f"decoder.conv_blocks.{k}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv(sd, "decoder.conv_out", _swish(_gn(sd, "decoder.norm_out", h)))


def _reference(sd, x):
    """LlamaGen's encode -> indices -> decode_code: indices ``[B, h, w]``, distances ``[B*h*w, K]``, pixels."""
    z = _reference_latents(sd, x)
    b, d, h, w = z.shape
    rows = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), dim=1)
    codebook = F.normalize(sd["quantize.embedding.weight"], dim=1)
    distances = rows.square().sum(1, keepdim=True) + codebook.square().sum(1) - 2 * rows @ codebook.T
    index = distances.argmin(dim=1)  # ties: the first (lowest) index
    codes = codebook[index].reshape(b, h, w, d).permute(0, 3, 1, 2)
    return index.reshape(b, h, w), distances, _reference_decode(sd, codes)


def _image(h=16, w=24, seed=1):
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _assert_reproduces(model, sd, x, check_margin=True):
    with torch.no_grad():
        ref_indices, distances, ref_pixels = _reference(sd, x)
        if check_margin:  # comparing indices is meaningful only away from near-ties
            two_best = distances.topk(2, dim=1, largest=False).values
            assert (two_best[:, 1] - two_best[:, 0]).min() > 1e-4
        indices = model.encode(x)
        torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)
        assert ref_pixels.abs().max() > 0.1  # a signal worth comparing
        torch.testing.assert_close(model.decode(indices), ref_pixels, rtol=1e-5, atol=1e-5)
        reconstruction, out = model(x)
        torch.testing.assert_close(out.indices, ref_indices, rtol=0, atol=0)
        torch.testing.assert_close(reconstruction, ref_pixels, rtol=1e-5, atol=1e-5)


# --- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_detects_infers_and_reproduces_llamagen(tmp_path, arch):
    ch_mult, num_res_blocks = ARCHS[arch]
    sd = _llamagen_state_dict(ch_mult, num_res_blocks)
    path = tmp_path / "vq_ds_c2i.pt"
    torch.save({"model": sd}, path)  # the released files' container

    inspection = inspect_checkpoint(path)
    assert inspection.family == "llamagen" and inspection.state_dicts == ("model",)
    expected = TokenizerConfig(
        ch=CH,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=(256 // 2 ** (len(ch_mult) - 1),),
        resolution=256,
        z_channels=Z_CHANNELS,
        dropout=0.0,
        quantizer=VQConfig(
            codebook_size=N_EMBED,
            dim=EMBED_DIM,
            metric="cosine",
            update="grad",
            commitment_weight=0.25,
            kmeans_init=False,
            dead_code_threshold=0.0,
        ),
    )
    assert inspection.config == expected
    assert expected.attention_levels == (len(ch_mult) - 1,)  # encoder and decoder: the lowest resolution only

    model = load_checkpoint(path)
    assert isinstance(model, Tokenizer) and not model.training and model.config == expected
    torch.testing.assert_close(
        model.quantize.codebook.detach(), F.normalize(sd["quantize.embedding.weight"], dim=1), rtol=0, atol=0
    )
    _assert_reproduces(model, sd, _image(16, 24))  # non-square
    with torch.no_grad():
        torch.testing.assert_close(model.encode_to_latents(_image(8, 12)), _reference_latents(sd, _image(8, 12)))


@pytest.mark.parametrize(
    ("container", "chosen"),
    [
        ("ema", "ema"),  # a --ema training run: LlamaGen's loaders take the EMA weights
        ("model+state_dict", "model"),
        ("state_dict", "state_dict"),
        ("bare", "bare"),
    ],
)
def test_container_preference_follows_llamagen(tmp_path, container, chosen):
    weights = {key: _llamagen_state_dict((1, 2), 1, seed=s) for s, key in enumerate(("model", "ema", "state_dict"))}
    weights["bare"] = weights["model"]
    if container == "ema":
        obj = _training_container(weights["model"], weights["ema"])
    elif container == "model+state_dict":
        obj = {"model": weights["model"], "state_dict": weights["state_dict"]}
    elif container == "state_dict":
        obj = {"state_dict": weights["state_dict"], "epoch": 3}
    else:
        obj = weights["bare"]
    path = tmp_path / "checkpoint.pt"
    torch.save(obj, path)
    _assert_reproduces(load_checkpoint(path), weights[chosen], _image(8, 12, seed=2))


def test_codebook_ties_go_to_the_lowest_index(tmp_path):
    """Rows ``K/2..K-1`` point exactly where rows ``0..K/2-1`` do (scaled by 2, which normalisation undoes
    bit for bit), so every latent ties; LlamaGen's argmin keeps the first, and so must we."""
    sd = _llamagen_state_dict((1, 2), 1)
    half = sd["quantize.embedding.weight"][: N_EMBED // 2]
    sd["quantize.embedding.weight"] = torch.cat([half, 2 * half])
    path = tmp_path / "ties.pt"
    torch.save({"model": sd}, path)
    model = load_checkpoint(path)
    x = _image(8, 12, seed=3)
    with torch.no_grad():
        ref_indices, _, _ = _reference(sd, x)
    assert ref_indices.max() < N_EMBED // 2
    _assert_reproduces(model, sd, x, check_margin=False)


def test_not_confused_with_taming(tmp_path):
    sd = _llamagen_state_dict((1, 2), 1)
    torch.save({"model": sd}, tmp_path / "llamagen.pt")
    checkpoint = read_checkpoint(tmp_path / "llamagen.pt")
    assert not taming.detect(checkpoint) and detect_family(checkpoint) is llamagen

    # the same architecture in taming's layout (down.{i}.block.{j}, mid.block_1, a Lightning container)
    config = llamagen.infer_config(checkpoint)
    taming_sd = {k: v for k, v in Tokenizer(config).state_dict().items() if not k.startswith("quantize.")}
    taming_sd["quantize.embedding.weight"] = sd["quantize.embedding.weight"]
    torch.save({"state_dict": taming_sd, "epoch": 1}, tmp_path / "taming.ckpt")
    checkpoint = read_checkpoint(tmp_path / "taming.ckpt")
    assert not llamagen.detect(checkpoint) and detect_family(checkpoint) is taming
    assert load_checkpoint(tmp_path / "taming.ckpt").config.quantizer.metric == "l2"
    assert load_checkpoint(tmp_path / "llamagen.pt", format="llamagen").config.quantizer.metric == "cosine"


def test_drifted_codebook_still_decodes_normalised_rows(tmp_path):
    """While fine-tuning, LlamaGen's codebook parameter leaves the unit sphere but every use normalises it;
    our cosine VQ must quantize to, and decode from, the normalised rows too."""
    sd = _llamagen_state_dict((1, 2), 1)
    torch.save({"model": sd}, tmp_path / "vq.pt")
    model = load_checkpoint(tmp_path / "vq.pt")
    with torch.no_grad():
        model.quantize.codebook.mul_(sd["quantize.embedding.weight"].norm(dim=1, keepdim=True))
    x = _image(8, 12, seed=4)
    _assert_reproduces(model, sd, x)
    indices = model.encode(x)
    rows = F.normalize(sd["quantize.embedding.weight"], dim=1)[indices].permute(0, 3, 1, 2)
    torch.testing.assert_close(model.quantize.indices_to_codes(indices), rows)
    with torch.no_grad():
        out = model.quantize(model.quant_conv(model.encoder(x)))
    torch.testing.assert_close(out.quantized, rows)


def test_unsupported_layouts_are_named(tmp_path):
    sd = _llamagen_state_dict((1, 2), 1, decoder_ch_mult=(2, 2))
    torch.save({"model": sd}, tmp_path / "asym.pt")
    with pytest.raises(ValueError, match=r"asym\.pt.*decoder's level widths \[64, 64\].*encoder's \[32, 64\]"):
        load_checkpoint(tmp_path / "asym.pt")

    sd = _llamagen_state_dict((1, 2), 1)
    sd["encoder.conv_blocks.0.res.0.conv_shortcut.weight"] = torch.zeros(32, 32, 3, 3)
    del sd["decoder.norm_out.bias"]
    torch.save({"model": sd}, tmp_path / "odd.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "odd.pt")
    message = str(info.value)
    assert "odd.pt" in message and "decoder.norm_out.bias" in message and "conv_shortcut.weight" in message
