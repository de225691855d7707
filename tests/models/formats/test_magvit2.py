"""Open-MAGVIT2 checkpoints against the project's own code (``pip install --no-deps open-magvit2``).

The peer's ``Encoder``/``Decoder`` (``improved_model.py``), ``LFQ`` and ``LitEma`` are built at tiny sizes with
random, perturbed weights and written as a Lightning checkpoint in the project's layout (live weights, ``loss.*``,
``model_ema.*``). ``load_checkpoint`` must detect it and reproduce the peer's encode -> indices -> decode with
the EMA weights. Only the peer modules that import nothing beyond torch and einops are imported.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tokenizer.models import Magvit2Config, Magvit2Tokenizer, load_tokenizer
from tokenizer.models.formats import detect_family, inspect_checkpoint, load_checkpoint, magvit2, read_checkpoint
from tokenizer.models.magvit2_blocks import depth_to_space
from tokenizer.quantizers import LFQConfig

peer_model = pytest.importorskip("open_magvit2.taming.modules.diffusionmodules.improved_model")
peer_lfq = pytest.importorskip("open_magvit2.taming.modules.vqvae.lookup_free_quantize")
peer_ema = pytest.importorskip("open_magvit2.taming.modules.ema")

# (ch_mult, z_channels = LFQ bits, image sizes [H, W]); ch 32, one ResBlock per level
CASES = [((1, 2), 6, [(32, 32), (24, 40)]), ((1, 1, 2), 10, [(16, 48)])]


class PeerModel(nn.Module):
    """The parts of the project's ``lfqgan.VQModel`` a checkpoint holds, under its attribute names."""

    def __init__(self, ch_mult: tuple[int, ...], z_channels: int) -> None:
        super().__init__()
        ddconfig = {
            "ch": 32,
            "out_ch": 3,
            "in_channels": 3,
            "num_res_blocks": 1,
            "z_channels": z_channels,
            "ch_mult": ch_mult,
            "resolution": 32,
        }
        self.encoder = peer_model.Encoder(**ddconfig)
        self.decoder = peer_model.Decoder(**ddconfig)
        self.quantize = peer_lfq.LFQ(dim=z_channels, codebook_size=2**z_channels)
        self.loss = nn.Module()  # stands for the discriminator: trainable, so LitEma copies it too
        self.loss.discriminator = nn.Conv2d(3, 4, 3)

    @torch.no_grad()
    def perturb(self, generator: torch.Generator) -> None:
        """Move every parameter off its initialisation (norms away from identity, biases away from zero)."""
        for p in self.parameters():
            scale = 0.2 if p.ndim == 1 else 0.5 * float(p.std())
            p.add_(scale * torch.randn(p.shape, generator=generator))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The project's encode: (straight-through codes, indices [B, h, w])."""
        latents = self.encoder(pixels)
        quantized, _, indices = self.quantize(latents)
        batch, _, height, width = latents.shape
        return quantized, indices.view(batch, height, width)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        batch, height, width = indices.shape
        shape = (batch, height, width, self.quantize.codebook_dim)
        codes = self.quantize.get_codebook_entry(indices.view(batch, -1), shape, order=None)
        return self.decoder(codes)


def _write_checkpoint(path, ch_mult, z_channels, *, ema: bool = True, lightning: bool = True, seed: int = 0):
    """A checkpoint as the project's training writes it; returns the peer model holding the weights
    that inference uses (the EMA ones when ``ema``), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    peer = PeerModel(ch_mult, z_channels)
    peer.perturb(g)
    shadow = peer_ema.LitEma(peer) if ema else None  # the EMA copy: today's weights
    peer.perturb(g)  # the live weights move on, so loading the wrong set fails
    state = {k: v.clone() for k, v in peer.state_dict().items()}  # the live weights, not views of them
    if shadow is not None:
        state.update({f"model_ema.{k}": v for k, v in shadow.state_dict().items()})
        shadow.copy_to(peer)  # the project's ema_scope
    obj = {"epoch": 3, "global_step": 70, "state_dict": state, "hyper_parameters": {"n_embed": 2**z_channels}}
    torch.save(obj if lightning else state, path)
    return peer.eval()


def _pixels(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("ch_mult", "z_channels", "sizes"), CASES)
def test_matches_the_project_encode_indices_decode(tmp_path, ch_mult, z_channels, sizes):
    path = tmp_path / "tokenizer.ckpt"
    peer = _write_checkpoint(path, ch_mult, z_channels)
    model = load_checkpoint(path)
    assert isinstance(model, Magvit2Tokenizer) and not model.training
    assert model.config == Magvit2Config(
        ch=32, ch_mult=ch_mult, num_res_blocks=1, z_channels=z_channels, quantizer=LFQConfig(dim=z_channels)
    )
    assert model.codebook_size == 2**z_channels
    for number, (height, width) in enumerate(sizes):
        x = _pixels(2, height, width, seed=number)
        torch.testing.assert_close(model.encode_to_latents(x), peer.encoder(x), rtol=1e-5, atol=1e-5)
        quantized, expected = peer.encode(x)
        indices = model.encode(x)
        assert indices.shape == (2, height // model.downsample_factor, width // model.downsample_factor)
        assert torch.equal(indices, expected)
        assert len(indices.unique()) > 1
        reference = peer.decode_indices(expected)
        torch.testing.assert_close(model.decode(indices), reference, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            reconstruction, out = model(x)
            torch.testing.assert_close(reconstruction, peer.decoder(quantized), rtol=1e-4, atol=1e-4)
        assert torch.equal(out.indices, expected)
        assert reference.abs().max() > 1e-2  # the comparison is not between two near-zero images


def test_live_weights_without_ema_and_bare_state_dict(tmp_path):
    path = tmp_path / "bare.pt"
    peer = _write_checkpoint(path, (1, 2), 8, ema=False, lightning=False, seed=1)
    model = load_checkpoint(path)
    x = _pixels(1, 32, 16, seed=3)
    assert torch.equal(model.encode(x), peer.encode(x)[1])
    torch.testing.assert_close(model.decode(model.encode(x)), peer.decode_indices(peer.encode(x)[1]))


def test_live_weights_on_request_differ_from_ema(tmp_path):
    path = tmp_path / "model.ckpt"
    _write_checkpoint(path, (1, 2), 8, seed=2)
    checkpoint = read_checkpoint(path)
    config = magvit2.infer_config(checkpoint)
    ema, live = magvit2.load(checkpoint, config), magvit2.load(checkpoint, config, use_ema=False)
    state = checkpoint.state_dicts["state_dict"]
    assert torch.equal(live.encoder.conv_in.weight, state["encoder.conv_in.weight"])
    assert torch.equal(ema.encoder.conv_in.weight, state["model_ema.encoderconv_inweight"])
    assert not torch.equal(ema.decoder.adaptive[0].gamma.weight, live.decoder.adaptive[0].gamma.weight)


def test_detection_and_inspection(tmp_path):
    path = tmp_path / "model.ckpt"
    _write_checkpoint(path, (1, 1, 2), 10)
    info = inspect_checkpoint(path)
    assert info.family == "magvit2" and info.to_dict()["codebook_size"] == 2**10
    assert info.to_dict()["downsample_factor"] == 4
    # the same bodies with a codebook (SEED-Voken's IBQ) are not this family
    state = dict(read_checkpoint(path).state_dicts["state_dict"])
    state["quantize.embedding.weight"] = torch.zeros(16, 10)
    torch.save({"state_dict": state}, tmp_path / "ibq.ckpt")
    ibq = read_checkpoint(tmp_path / "ibq.ckpt")
    assert not magvit2.detect(ibq)
    try:  # another family may claim it, never this one
        family = detect_family(ibq).NAME
    except ValueError:
        family = None
    assert family != "magvit2"


def test_mismatched_config_lists_the_tensors(tmp_path):
    path = tmp_path / "model.ckpt"
    _write_checkpoint(path, (1, 2), 6)
    checkpoint = read_checkpoint(path)
    wrong = Magvit2Config(ch=32, ch_mult=(1, 2), num_res_blocks=2, z_channels=6, quantizer=LFQConfig(dim=6))
    with pytest.raises(ValueError, match=r"missing tensors .*\n.*encoder\.down\.0\.block\.1"):
        magvit2.load(checkpoint, wrong)
    smaller = Magvit2Config(ch=32, ch_mult=(1,), num_res_blocks=1, z_channels=6, quantizer=LFQConfig(dim=6))
    with pytest.raises(ValueError, match="unexpected tensors"):
        magvit2.load(checkpoint, smaller)


def test_save_pretrained_round_trip(tmp_path):
    path = tmp_path / "model.ckpt"
    _write_checkpoint(path, (1, 2), 6)
    model = load_tokenizer(path)  # the front door: a checkpoint file, its family detected
    assert type(model) is Magvit2Tokenizer
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model"] == "magvit2"
    again = load_tokenizer(tmp_path / "saved")
    assert type(again) is Magvit2Tokenizer and again.config == model.config
    x = _pixels(1, 16, 32, seed=5)
    assert torch.equal(again.encode(x), model.encode(x))
    torch.testing.assert_close(again.decode(again.encode(x)), model.decode(model.encode(x)), rtol=0, atol=0)


def test_depth_to_space_is_the_projects_and_not_pixel_shuffle():
    x = torch.randn(2, 4 * 3, 5, 7)
    out = depth_to_space(x, 2)
    assert torch.equal(out, peer_model.depth_to_space(x, 2))
    assert out.shape == (2, 3, 10, 14) and not torch.equal(out, torch.pixel_shuffle(x, 2))


def test_config_checks_and_one_position_grid():
    with pytest.raises(ValueError, match="quantizer.dim must equal z_channels"):
        Magvit2Config(z_channels=8, quantizer=LFQConfig(dim=6))
    with pytest.raises(ValueError, match="multiple of 32"):
        Magvit2Config(ch=48, ch_mult=(1, 2))
    with pytest.raises(ValueError, match="unknown Magvit2Config keys"):
        Magvit2Config.from_dict({"attn_resolutions": [16]})
    config = Magvit2Config(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=6, quantizer=LFQConfig(dim=6))
    assert Magvit2Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="at least 2 positions"):
        Magvit2Tokenizer(config).decode(torch.zeros(1, 1, 1, dtype=torch.long))
