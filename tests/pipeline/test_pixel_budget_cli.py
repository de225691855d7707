"""`tokenizer encode --max-pixels N --too-large downscale|skip`: an image over the budget is downscaled (the
manifest says so) or reported as too_large, and the run goes on."""

from __future__ import annotations

import json

import pytest

from tokenizer import cli
from tokenizer.tokens import TokenDataset

from .conftest import write_image


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    write_image(folder / "big.png", 64, 32, seed=1)  # 2048 pixels
    write_image(folder / "small.png", 16, 16, seed=2)  # 256 pixels
    return folder


def _encode(images, model_dir, out, *extra):
    argv = ["encode", str(images), "--model", str(model_dir), "--out", str(out), "--workers", "0", *extra]
    return cli.main(argv)


def test_downscale_records_the_original_size_and_the_scale(tmp_path, images, model_dir):
    out = tmp_path / "down"
    assert _encode(images, model_dir, out, "--max-pixels", "512") == 0  # downscale is the default
    big, small = _rows(out / "manifest.jsonl")
    assert big["source"].endswith("big.png") and (big["width"], big["height"]) == (64, 32)
    assert big["scale"] == 0.5 and big["scaled_size"] == [32, 16]
    assert "scale" not in small and "scaled_size" not in small
    dataset = TokenDataset(out)
    assert tuple(dataset[0]["tokens"].shape) == (4, 8)  # 32x16 pixels, f4
    assert tuple(dataset[1]["tokens"].shape) == (4, 4)
    assert (out / "errors.jsonl").read_text() == ""


def test_skip_reports_too_large_and_keeps_going(tmp_path, images, model_dir):
    out = tmp_path / "skip"
    assert _encode(images, model_dir, out, "--max-pixels", "16x32", "--too-large", "skip") == 0
    [error] = _rows(out / "errors.jsonl")
    assert error["kind"] == "too_large" and error["source"].endswith("big.png")
    assert "64x32 = 2,048 pixels is over the budget of 512" in error["error"]
    [row] = _rows(out / "manifest.jsonl")
    assert row["source"].endswith("small.png")


def test_no_budget(tmp_path, images, model_dir):
    out = tmp_path / "none"
    assert _encode(images, model_dir, out, "--max-pixels", "0", "--too-large", "skip") == 0
    assert [row.get("scale") for row in _rows(out / "manifest.jsonl")] == [None, None]
    assert tuple(TokenDataset(out)[0]["tokens"].shape) == (8, 16)


def test_a_bad_budget_is_an_argument_error(tmp_path, images, model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _encode(images, model_dir, tmp_path / "bad", "--max-pixels", "lots")
    assert exit_info.value.code == 2 and "--max-pixels" in capsys.readouterr().err
