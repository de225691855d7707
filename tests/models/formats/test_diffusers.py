"""diffusers ``VQModel`` folders, loaded by ``load_checkpoint``, against diffusers' own encode -> indices -> decode.

Needs the test-only dependency ``diffusers`` (``pip install diffusers``); skipped without it. Every parameter of
the diffusers model is randomised (its GroupNorms start at 1/0 and its codebook near 0), so a wrong name, order or
reshape shows up in the indices or the reconstruction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tokenizer.models.formats import inspect_checkpoint, load_checkpoint
from tokenizer.models.formats.diffusers import infer_config

diffusers = pytest.importorskip("diffusers")

DOWN, UP = "DownEncoderBlock2D", "UpDecoderBlock2D"


def _vq_model(seed: int = 0, norm_num_groups: int = 32, **config) -> diffusers.VQModel:
    """A diffusers VQModel with every tensor random: conv/linear weights at fan-in scale, norms near 1, biases and
    a codebook spread like the latents."""
    torch.manual_seed(seed)
    model = diffusers.VQModel(latent_channels=4, num_vq_embeddings=64, norm_num_groups=norm_num_groups, **config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name == "quantize.embedding.weight":
                continue
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
        latents = model.encode(torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).latents
        codebook = model.quantize.embedding.weight
        codebook.copy_(latents.mean() + latents.std() * torch.randn(codebook.shape, generator=g))
    return model


def _theirs(model: diffusers.VQModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' indices ``[B, h, w]`` and reconstruction for ``pixels``."""
    with torch.no_grad():
        latents = model.encode(pixels).latents
        indices = model.quantize(latents)[2][2].view(latents.shape[0], *latents.shape[2:])
        if model.config.lookup_from_codebook:  # decode straight from the indices, as aMUSEd does
            shape = (*indices.shape, latents.shape[1])
            reconstruction = model.decode(indices.reshape(-1), force_not_quantize=True, shape=shape).sample
        else:
            reconstruction = model.decode(latents).sample
    return indices, reconstruction


def _check_parity(model: diffusers.VQModel, path: Path, height: int, width: int) -> None:
    ours = load_checkpoint(path)
    pixels = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(7)) * 2 - 1
    indices, reconstruction = _theirs(model, pixels)
    assert indices.unique().numel() > 4  # the codebook is really exercised
    ours_indices = ours.encode(pixels)
    assert torch.equal(ours_indices, indices)
    with torch.no_grad():
        ours_reconstruction = ours.decode(ours_indices)
    torch.testing.assert_close(ours_reconstruction, reconstruction, rtol=1e-4, atol=1e-4)


CONFIGS = {
    # two levels, attention at the lowest one in encoder and decoder and in the mid blocks
    "attention": {
        "block_out_channels": (32, 64),
        "down_block_types": (DOWN, "Attn" + DOWN),
        "up_block_types": ("Attn" + UP, UP),
        "layers_per_block": 1,
    },
    # aMUSEd-style: no mid attention, indices decoded through the codebook, a wider codebook than the latents
    "amused": {
        "block_out_channels": (32, 64),
        "down_block_types": (DOWN, DOWN),
        "up_block_types": (UP, UP),
        "layers_per_block": 2,
        "mid_block_add_attention": False,
        "lookup_from_codebook": True,
        "vq_embed_dim": 8,
        "force_upcast": True,
    },
    # three levels (f4) with a channel change in the middle and attention at the highest resolution
    "three_levels": {
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("Attn" + DOWN, DOWN, DOWN),
        "up_block_types": (UP, UP, "Attn" + UP),
        "layers_per_block": 2,
    },
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_folder_matches_diffusers(tmp_path: Path, name: str) -> None:
    model = _vq_model(**CONFIGS[name])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert inspect_checkpoint(tmp_path).family == "diffusers"
    factor = 2 ** (len(model.config.block_out_channels) - 1)
    _check_parity(model, tmp_path, 8 * factor, 5 * factor)  # non-square


def test_group_count_from_config(tmp_path: Path) -> None:
    model = _vq_model(norm_num_groups=8, **CONFIGS["attention"])
    model.save_pretrained(tmp_path)
    assert load_checkpoint(tmp_path, format="diffusers").config.norm_groups == 8
    _check_parity(model, tmp_path, 16, 10)


def test_inferred_config(tmp_path: Path) -> None:
    model = _vq_model(**CONFIGS["three_levels"])
    model.save_pretrained(tmp_path)
    config = inspect_checkpoint(tmp_path).config
    assert (config.ch, config.ch_mult, config.num_res_blocks) == (32, (1, 2, 2), 2)
    assert config.attention_levels == (0,) and config.mid_attention
    assert (config.z_channels, config.embed_dim, config.quantizer.codebook_size) == (4, 4, 64)
    amused = _vq_model(**CONFIGS["amused"]).state_dict()
    assert not infer_config(amused).mid_attention and infer_config(amused).embed_dim == 8


def test_bare_safetensors_file(tmp_path: Path) -> None:
    """Without config.json, the diffusers tensor names alone identify the family and the shapes the config."""
    model = _vq_model(**CONFIGS["attention"])
    path = tmp_path / "vqvae.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert inspect_checkpoint(path).family == "diffusers"
    _check_parity(model, path, 16, 24)


def test_pre_0_15_attention_names_in_bin(tmp_path: Path) -> None:
    """Older diffusers saved attention as ``query/key/value/proj_attn`` in ``diffusion_pytorch_model.bin``."""
    model = _vq_model(**CONFIGS["attention"])
    model.save_pretrained(tmp_path, safe_serialization=False)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for k, v in model.state_dict().items():
        for new, legacy in old.items():
            k = k.replace(f".{new}.", f".{legacy}.")
        state[k] = v
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    assert any(".proj_attn." in k for k in state)
    _check_parity(model, tmp_path, 16, 16)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"norm_type": "spatial"}, "norm_type='spatial'"),
        ({"act_fn": "gelu"}, "act_fn='gelu'"),
        ({"_class_name": "AutoencoderKL"}, "AutoencoderKL"),
        ({"norm_num_groups": 0}, r"config\.json\) has norm_num_groups=0; it must be a positive int"),
        ({"norm_num_groups": 8.0}, r"config\.json\) has norm_num_groups=8\.0; it must be a positive int"),
        ({"norm_num_groups": "32"}, r"config\.json\) has norm_num_groups='32'; it must be a positive int"),
        ({"norm_num_groups": 48}, r"config\.json\) has norm_num_groups=48, which does not divide .*\[32, 64\]"),
    ],
)
def test_refused_configs(tmp_path: Path, change: dict, message: str) -> None:
    _vq_model(**CONFIGS["attention"]).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path, format="diffusers")


def test_spatial_norm_weights_refused(tmp_path: Path) -> None:
    """MoVQ's decoder (norm_type='spatial') is recognised from its tensors alone and refused."""
    torch.manual_seed(0)
    model = diffusers.VQModel(
        block_out_channels=(32, 64),
        down_block_types=(DOWN, DOWN),
        up_block_types=(UP, UP),
        latent_channels=4,
        num_vq_embeddings=16,
        norm_type="spatial",
    )
    path = tmp_path / "movq.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="spatial"):
        load_checkpoint(path)


def test_fp32_weights_preferred_over_fp16_variant(tmp_path: Path) -> None:
    """A folder with ``diffusion_pytorch_model.fp16.safetensors`` beside the fp32 file loads the fp32 weights."""
    model = _vq_model(**CONFIGS["attention"])
    model.save_pretrained(tmp_path)
    _vq_model(**CONFIGS["attention"]).half().save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").is_file()
    _check_parity(model, tmp_path, 16, 16)
