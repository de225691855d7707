"""load_train_config and TrainConfig: YAML/JSON sections, overrides, errors that name the culprit, round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from tokenizer.losses import VQGANLossConfig
from tokenizer.models import TokenizerConfig, VideoTokenizerConfig
from tokenizer.quantizers import FSQConfig, ResidualConfig, VQConfig
from tokenizer.train_config import DataConfig, OptimConfig, TrainConfig, load_train_config

from .conftest import tiny_config

YAML_TEXT = """\
out_dir: runs/tiny
steps: 20
batch_size: 3
seed: 11
mixed_precision: "no"
model:
  ch: 32
  ch_mult: [1, 1, 2]
  num_res_blocks: 1
  attn_resolutions: [8]
  resolution: 32
  z_channels: 16
  quantizer: {kind: vq, codebook_size: 64, dim: 8}
loss:
  perceptual_weight: 0.0
  disc_start: 3
data:
  train: [photos, extra/one.png]
  size: 36
  max_zoom: 1.5
optim:
  lr: 0.002
  betas: [0.9, 0.99]
  disc_lr: null
"""

EXPECTED = TrainConfig(
    out_dir="runs/tiny",
    steps=20,
    batch_size=3,
    seed=11,
    mixed_precision="no",
    model=TokenizerConfig(
        ch=32,
        ch_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        resolution=32,
        z_channels=16,
        quantizer=VQConfig(codebook_size=64, dim=8),
    ),
    loss=VQGANLossConfig(perceptual_weight=0.0, disc_start=3),
    data=DataConfig(train=("photos", "extra/one.png"), size=36, max_zoom=1.5),
    optim=OptimConfig(lr=0.002, betas=(0.9, 0.99), disc_lr=None),
)


def _write(folder: Path, raw: dict, suffix: str, stem: str = "config") -> Path:
    path = folder / f"{stem}{suffix}"
    path.write_text(json.dumps(raw) if suffix == ".json" else yaml.safe_dump(raw))
    return path


def _raw() -> dict:
    return yaml.safe_load(YAML_TEXT)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".YAML"])
def test_yaml_and_json_give_the_same_config_with_tuples_restored(tmp_path, suffix):
    config = load_train_config(_write(tmp_path, _raw(), suffix))
    assert config == EXPECTED
    assert config.model.ch_mult == (1, 1, 2) and isinstance(config.model.ch_mult, tuple)
    assert isinstance(config.model.attn_resolutions, tuple)
    assert config.data.train == ("photos", "extra/one.png") and isinstance(config.data.train, tuple)
    assert config.optim.betas == (0.9, 0.99) and isinstance(config.optim.betas, tuple)
    # Fields absent from the file take their defaults, in every section.
    assert config.grad_accumulation == 1 and config.data.flip is True and config.optim.warmup_steps == 1000
    assert config.loss.disc_weight == VQGANLossConfig().disc_weight


def test_handwritten_yaml_parses(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(YAML_TEXT)
    assert load_train_config(str(path)) == EXPECTED


def test_overrides_replace_top_level_keys(tmp_path):
    path = _write(tmp_path, _raw(), ".yaml")
    data = {"train": ["elsewhere"], "size": 32}
    config = load_train_config(path, overrides={"steps": 7, "out_dir": "runs/other", "data": data})
    assert config.steps == 7 and config.out_dir == "runs/other"
    assert config.data == DataConfig(train=("elsewhere",), size=32)  # a section is replaced whole, not merged
    assert config.model == EXPECTED.model and config.seed == 11
    assert load_train_config(path, overrides={}) == load_train_config(path) == EXPECTED


@pytest.mark.parametrize(
    ("section", "key"),
    [(None, "stepz"), ("data", "sise"), ("optim", "learning_rate"), ("model", "channels"), ("loss", "gan_weight")],
)
def test_unknown_keys_are_errors_naming_them(tmp_path, section, key):
    raw = _raw()
    (raw if section is None else raw[section])[key] = 1
    with pytest.raises(ValueError, match=key) as info:
        load_train_config(_write(tmp_path, raw, ".yaml"))
    assert f"unknown keys in {section or 'config'}: ['{key}']" in str(info.value)  # the section, not a class


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("loss", "disc_layers", 0, "loss.disc_layers must be an integer >= 1"),
        ("loss", "disc_norm", "layer", "loss.disc_norm must be one of"),
        ("data", "max_zoom", 0.5, "data.max_zoom must be >= 1"),
        ("optim", "lr", 0, "optim.lr must be > 0"),
        ("model", "ch_mult", [], "model: ch_mult must hold at least one level"),
    ],
)
def test_bad_values_are_errors_naming_the_yaml_key(tmp_path, section, key, value, named):
    raw = _raw()
    raw[section][key] = value
    with pytest.raises(ValueError) as info:
        load_train_config(_write(tmp_path, raw, ".yaml"))
    assert named in str(info.value)
    assert "Config" not in str(info.value)  # not VQGANLossConfig.disc_layers: the file has no such name


def test_a_dotted_override_replaces_one_key_of_a_section(tmp_path):
    path = _write(tmp_path, _raw(), ".yaml")
    config = load_train_config(path, overrides={"data.train": ["a", "b/c.png"], "loss.disc_start": 9})
    assert config.data == dataclasses.replace(EXPECTED.data, train=("a", "b/c.png"))  # size, max_zoom kept
    assert config.loss == dataclasses.replace(EXPECTED.loss, disc_start=9)
    assert config.model == EXPECTED.model and config.steps == EXPECTED.steps
    with pytest.raises(ValueError, match=r"unknown keys in data: \['trian'\]"):
        load_train_config(path, overrides={"data.trian": ["a"]})
    raw = _raw()
    del raw["optim"]
    assert load_train_config(_write(tmp_path, raw, ".yaml"), overrides={"optim.lr": 0.5}).optim == OptimConfig(lr=0.5)


def test_an_unknown_override_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="batchsize"):
        load_train_config(_write(tmp_path, _raw(), ".json"), overrides={"batchsize": 4})


def test_missing_out_dir_is_an_error(tmp_path):
    raw = _raw()
    del raw["out_dir"]
    with pytest.raises(ValueError, match="out_dir"):
        load_train_config(_write(tmp_path, raw, ".yaml"))


@pytest.mark.parametrize(
    ("ch_mult", "size", "ok"), [([1, 1, 2], 36, True), ([1, 1, 1, 1], 36, False), ([1, 1], 30, True)]
)
def test_data_size_must_be_a_multiple_of_the_downsample_factor(tmp_path, ch_mult, size, ok):
    raw = _raw()
    raw["model"]["ch_mult"], raw["data"]["size"] = ch_mult, size
    path = _write(tmp_path, raw, ".yaml")
    if ok:
        assert load_train_config(path).data.size == size
    else:  # f8: 36 is a multiple of 4 but not of 8
        with pytest.raises(ValueError, match="data.size"):
            load_train_config(path)


def test_wrong_suffix_is_rejected(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('out_dir = "runs"\n')
    with pytest.raises(ValueError, match="config.toml"):
        load_train_config(path)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "no such dir" / "train.yaml"
    with pytest.raises(FileNotFoundError, match="no such dir"):
        load_train_config(missing)
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path)  # a folder is not a config file


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just a string\n"])
def test_a_file_without_a_top_level_mapping_is_rejected(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(TypeError, match="mapping"):
        load_train_config(path)


def _variants(tmp_path: Path) -> list[TrainConfig]:
    base = tiny_config(tmp_path / "out", tmp_path / "photos")
    fsq_model = dataclasses.replace(base.model, quantizer=FSQConfig(levels=(8, 5, 5, 5), dim=8))
    residual = ResidualConfig(quantizer=VQConfig(codebook_size=32, dim=8, kmeans_init=False), depth=3)
    return [
        base,
        dataclasses.replace(
            base,
            model=fsq_model,
            data=DataConfig(train=("a", "b/c.png"), eval=("held",), size=48, random_crop=False, flip=False),
            optim=OptimConfig(lr=3e-4, disc_lr=1e-5, betas=(0.8, 0.95), grad_clip=0.0),
            loss=dataclasses.replace(base.loss, vgg_path="/w/vgg.pth", lin_path="/w/lin.pth", lecam_weight=0.01),
            ema_decay=0.999,
            mixed_precision="bf16",
            grad_accumulation=3,
        ),
        dataclasses.replace(base, model=dataclasses.replace(base.model, quantizer=residual)),
        TrainConfig(out_dir="defaults"),
    ]


def test_to_dict_json_from_dict_round_trip(tmp_path):
    for config in _variants(tmp_path):
        text = json.dumps(config.to_dict())
        back = TrainConfig.from_dict(json.loads(text))
        assert back == config
        assert json.dumps(back.to_dict()) == text


def test_a_saved_dict_loads_from_a_file(tmp_path):
    for k, config in enumerate(_variants(tmp_path)):
        for suffix in (".json", ".yaml"):
            path = _write(tmp_path, config.to_dict(), suffix, stem=f"config{k}")
            assert load_train_config(path) == config


def test_a_single_train_folder_given_as_a_string_is_not_split_into_letters(tmp_path):
    raw = _raw()
    raw["data"]["train"] = "/data/photos"
    raw["data"]["eval"] = "held"
    config = load_train_config(_write(tmp_path, raw, ".yaml"))
    assert config.data.train == ("/data/photos",) and config.data.eval == ("held",)


@pytest.mark.parametrize(("key", "value"), [("size", 0), ("size", -32), ("max_zoom", 0.5)])
def test_nonsense_data_sizes_are_rejected_when_loading(tmp_path, key, value):
    raw = _raw()
    raw["data"][key] = value
    with pytest.raises(ValueError, match=f"data.{key}"):
        load_train_config(_write(tmp_path, raw, ".yaml"))


def test_inputs_too_small_for_the_discriminators_are_refused_up_front():
    video = VideoTokenizerConfig(ch=32, ch_mult=(1, 1, 2), temporal_factor=4)
    gan = VQGANLossConfig(perceptual_weight=0.0, disc_start=10, disc_layers=3, disc_dims=3)
    with pytest.raises(ValueError, match=r"data.size=16 is too small .* at least 24 pixels"):
        TrainConfig(out_dir="x", model=video, loss=gan, data=DataConfig(size=16), steps=20)
    with pytest.raises(ValueError, match=r"data.clip_frames=5 is too short .* at least 6 frames"):
        TrainConfig(out_dir="x", model=video, loss=gan, data=DataConfig(size=32, clip_frames=5), steps=20)
    TrainConfig(out_dir="x", model=video, loss=gan, data=DataConfig(size=32, clip_frames=9), steps=20)
    # the GAN never runs: nothing to check
    TrainConfig(out_dir="x", model=video, loss=gan, data=DataConfig(size=16, clip_frames=5), steps=10)
    no_gan = dataclasses.replace(gan, disc_weight=0.0)
    TrainConfig(out_dir="x", model=video, loss=no_gan, data=DataConfig(size=16, clip_frames=5), steps=20)
