"""TokenizerConfig: defaults, derived sizes, validation (errors name the field), JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tokenizer.models import TokenizerConfig
from tokenizer.quantizers import FSQConfig, LFQConfig, ResidualConfig, VQConfig

QUANTIZERS = {
    "vq": (VQConfig(codebook_size=64, dim=12, codebook_dim=4, metric="cosine"), 12),
    "fsq": (FSQConfig(levels=(8, 5, 5)), 3),
    "fsq-projected": (FSQConfig(levels=(8, 5, 5), dim=7), 7),
    "fsq-preset": (FSQConfig(codebook_size=2**10), 4),
    "lfq": (LFQConfig(dim=10, codebook_bits=6), 10),
    "residual-vq": (ResidualConfig(VQConfig(codebook_size=16, dim=6), depth=3, shared_codebook=True), 6),
    "residual-fsq": (ResidualConfig(FSQConfig(levels=(7, 5)), depth=2, quantize_dropout=0.5), 2),
}


def test_defaults_are_tamings_f16_vqgan():
    config = TokenizerConfig()
    assert config.downsample_factor == 16
    assert config.embed_dim == 256
    assert config.attention_levels == (4,)  # 256 // 2**4 == 16
    assert isinstance(config.quantizer, VQConfig) and config.quantizer.codebook_size == 16384


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_embed_dim_is_the_quantizers_input_width(kind):
    quantizer, width = QUANTIZERS[kind]
    assert TokenizerConfig(quantizer=quantizer).embed_dim == width


@pytest.mark.parametrize("levels", range(1, 7))
def test_downsample_factor(levels):
    assert TokenizerConfig(ch_mult=(1,) * levels).downsample_factor == 2 ** (levels - 1)


def test_attention_levels_follow_tamings_rule():
    config = TokenizerConfig(ch=32, ch_mult=(1, 1, 1, 1), resolution=32, attn_resolutions=(32, 8, 3))
    assert config.attention_levels == (0, 2)  # 32 // 2**0 and 32 // 2**2; 3 matches no level
    assert TokenizerConfig(attn_resolutions=()).attention_levels == ()


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_json_round_trip(kind):
    config = TokenizerConfig(
        ch=32,
        ch_mult=(1, 2, 3),
        num_res_blocks=1,
        attn_resolutions=(64, 32),
        resolution=128,
        z_channels=5,
        dropout=0.25,
        in_channels=1,
        out_channels=4,
        quantizer=QUANTIZERS[kind][0],
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["quantizer"]["kind"] == kind.split("-")[0]
    restored = TokenizerConfig.from_dict(data)
    assert restored == config
    assert isinstance(restored.ch_mult, tuple) and isinstance(restored.attn_resolutions, tuple)
    inner = restored.quantizer.quantizer if isinstance(restored.quantizer, ResidualConfig) else restored.quantizer
    if isinstance(inner, FSQConfig) and inner.levels is not None:
        assert isinstance(inner.levels, tuple)


def test_from_dict_fills_defaults_and_accepts_lists():
    assert TokenizerConfig.from_dict({}) == TokenizerConfig()
    assert TokenizerConfig.from_dict({"ch_mult": [1, 2]}).ch_mult == (1, 2)
    assert TokenizerConfig(ch_mult=[1, 2]).ch_mult == (1, 2)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"chanels": 3}, "chanels"),
        ({"quantizer": {"kind": "vq", "codebook_size": 4, "dim": 4, "beta": 0.2}}, "beta"),
        ({"quantizer": {"kind": "residual", "quantizer": {"kind": "fsq", "levels": [5], "depth": 2}}}, "depth"),
        ({"quantizer": {"kind": "kmeans", "dim": 4}}, "kind"),
        ({"quantizer": {"codebook_size": 4, "dim": 4}}, "kind"),
    ],
)
def test_from_dict_rejects_unknown_keys(data, named):
    with pytest.raises(ValueError, match=named):
        TokenizerConfig.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ch_mult": ()}, "ch_mult"),
        ({"ch_mult": (1,) * 7}, "ch_mult"),
        ({"ch_mult": (1, 0)}, "ch_mult"),
        ({"ch_mult": (1.5,)}, "ch_mult"),
        ({"ch": 0}, "ch"),
        ({"ch": 48}, "ch"),  # GroupNorm(32) needs multiples of 32
        ({"ch": 32, "norm_groups": 12}, "norm_groups"),
        ({"norm_groups": 0}, "norm_groups"),
        ({"ch": 32, "ch_mult": (1, 3, 1.0)}, "ch_mult"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"z_channels": -1}, "z_channels"),
        ({"in_channels": True}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"resolution": 0}, "resolution"),
        ({"attn_resolutions": (0,)}, "attn_resolutions"),
        ({"attn_resolutions": 16}, "attn_resolutions"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"quantizer": {"kind": "vq"}}, "quantizer"),
    ],
)
def test_bad_fields_are_named(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=rf"\b{field}\b"):
        TokenizerConfig(**kwargs)


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TokenizerConfig().ch = 64  # type: ignore[misc]
