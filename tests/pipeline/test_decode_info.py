"""`tokenizer decode` and `tokenizer info` on a folder the encoder wrote."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import Tokenizer, cli
from tokenizer.data.images import to_uint8
from tokenizer.tokens import TokenDataset

from .conftest import tiny_model


@pytest.fixture
def tokens_dir(tmp_path, image_folder, model_dir):
    out = tmp_path / "tokens"
    assert cli.main(["encode", str(image_folder), "--model", str(model_dir), "--out", str(out), "--workers", "0",
                     "--size", "32"]) == 0  # fmt: skip
    return out


def test_decode_writes_each_item_as_the_model_decodes_it(tmp_path, tokens_dir, model_dir):
    out = tmp_path / "decoded"
    assert cli.main(["decode", str(tokens_dir), "--model", str(model_dir), "--out", str(out), "--batch-size", "4"]) == 0
    dataset = TokenDataset(tokens_dir)
    written = sorted(out.glob("*.png"))
    assert len(written) == len(dataset) == 17
    model = Tokenizer.from_pretrained(model_dir)
    for index in (0, 7, 16):
        item = dataset[index]
        name = f"{index:08d}-{item['source'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png"
        with torch.no_grad():
            expected = to_uint8(model.decode(item["tokens"][None])[0])
        decoded = np.asarray(Image.open(out / name))
        assert decoded.shape == (32, 32, 3)
        assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1  # batch-size rounding at most


def test_decode_refuses_another_model(tmp_path, tokens_dir):
    other = tmp_path / "other"
    tiny_model(seed=5).save_pretrained(other)
    assert cli.main(["decode", str(tokens_dir), "--model", str(other), "--out", str(tmp_path / "x")]) == 2


def test_info_summarises_models_and_token_folders(tokens_dir, model_dir, capsys):
    assert cli.main(["info", str(model_dir)]) == 0
    text = capsys.readouterr().out
    assert "vocabulary     300" in text and "downsampling   4x" in text
    assert cli.main(["info", str(tokens_dir)]) == 0
    text = capsys.readouterr().out
    assert "items          17 in 1 shards" in text
    assert f"tokens         {17 * 8 * 8}" in text
    # 300 codes -> log2(300) bits per token over 4x4 pixels.
    assert f"bits per pixel {np.log2(300) / 16:.4f}" in text
    assert "most used codes:" in text


def test_info_on_something_else_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 2
    assert "neither a model folder" in capsys.readouterr().err
