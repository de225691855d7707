"""A model folder from elsewhere is untrusted input: ``from_pretrained`` checks ``config.json`` against the
weights file's header before it allocates the model, so a config cannot make loading allocate more than the
file holds, and every bad file is a ``ValueError`` naming it (issue 13, item 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests._memory import MiB, memory_limit
from tokenizer.models import Tokenizer, TokenizerConfig, VideoTokenizer, VideoTokenizerConfig, load_tokenizer
from tokenizer.quantizers import VQConfig

BOUND = 512 * MiB  # far above these tiny models, far below what the configs below would allocate (tens of GB)


def _tiny(kind: str) -> Tokenizer:
    shared: dict[str, Any] = {"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": ()}
    quantizer = VQConfig(codebook_size=64, dim=4)
    if kind == "video":
        return VideoTokenizer(VideoTokenizerConfig(**shared, z_channels=4, quantizer=quantizer, temporal_factor=2))
    return Tokenizer(TokenizerConfig(**shared, z_channels=4, quantizer=quantizer))


@pytest.fixture(params=["image", "video"])
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Tokenizer, Path]:
    model = _tiny(request.param).eval()
    model.save_pretrained(tmp_path)
    return model, tmp_path


def _edit_config(folder: Path, change: dict[str, Any], quantizer: dict[str, Any] | None = None) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(change)
    config["quantizer"].update(quantizer or {})
    path.write_text(json.dumps(config))


def test_a_matching_folder_still_loads(saved: tuple[Tokenizer, Path]) -> None:
    model, folder = saved
    with memory_limit(BOUND):
        loaded = load_tokenizer(folder)
    assert type(loaded) is type(model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("change", "quantizer"),
    [
        ({"ch": 2048}, {}),  # about 70 GB of fp32 weights
        ({}, {"codebook_size": 2**31 - 1}),  # a 2**31 x 4 codebook and its EMA copy: about 70 GB
        ({"num_res_blocks": 40}, {}),
    ],
)
def test_a_config_that_disagrees_with_the_weights_fails_before_allocating(
    saved: tuple[Tokenizer, Path], change: dict, quantizer: dict
) -> None:
    model, folder = saved
    _edit_config(folder, change, quantizer)
    weights = folder / "model.safetensors"
    with memory_limit(BOUND), pytest.raises(ValueError, match="do not match the model's config") as caught:
        type(model).from_pretrained(folder)
    assert str(weights) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object, got list"),
        (b"\xff\xfe{}", "is not valid JSON"),
    ],
)
def test_a_config_json_that_is_not_an_object_names_the_file(tmp_path: Path, text: str | bytes, match: str) -> None:
    _tiny("image").save_pretrained(tmp_path)
    config = tmp_path / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match) as caught:
        Tokenizer.from_pretrained(tmp_path)
    assert str(config) in str(caught.value)
    with pytest.raises(ValueError, match=match):
        load_tokenizer(tmp_path, format="tessera")


@pytest.mark.parametrize(
    ("change", "quantizer"), [({"ch": "wide"}, {}), ({"ch_mult": 3}, {}), ({}, {"codebook_size": None})]
)
def test_badly_typed_config_values_name_the_file(tmp_path: Path, change: dict, quantizer: dict) -> None:
    _tiny("image").save_pretrained(tmp_path)
    _edit_config(tmp_path, change, quantizer)
    with pytest.raises(ValueError, match="is not a valid image tokenizer config") as caught:
        load_tokenizer(tmp_path)
    assert str(tmp_path / "config.json") in str(caught.value)


def test_a_pickle_saved_as_model_safetensors_is_refused_unread(tmp_path: Path) -> None:
    model = _tiny("image")
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), weights)  # a pickle under the safetensors name: never unpickled
    with pytest.raises(ValueError, match="is not a readable safetensors file") as caught:
        load_tokenizer(tmp_path)
    assert str(weights) in str(caught.value)
