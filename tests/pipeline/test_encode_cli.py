"""What `tokenizer encode` tells its user: exit status and messages when inputs are bad, --strict's error, and
the --size rule for images smaller than the crop."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tokenizer import cli
from tokenizer.data.preprocess import ImagePreprocess, load_for_tokenization

from .conftest import write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _encode(model_dir: Path, out: Path, *inputs: Path | str) -> list[str]:
    return ["encode", *map(str, inputs), "--model", str(model_dir), "--out", str(out), "--workers", "0"]


def test_when_every_input_is_bad_the_run_says_so_and_exits_1(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")
    (bad / "b.png").write_bytes(b"")
    assert cli.main(_encode(model_dir, tmp_path / "out", bad)) == 1
    captured = capsys.readouterr()
    assert "tokenized 0 items" in captured.out
    assert f"nothing was tokenized: all 2 inputs failed (the reasons are in {tmp_path / 'out' / 'errors.jsonl'})" in (
        captured.err
    )
    assert len((tmp_path / "out" / "errors.jsonl").read_text().splitlines()) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(_encode(model_dir, tmp_path / "out2", empty)) == 1
    assert "nothing was tokenized: no input files were found" in capsys.readouterr().err


def test_one_good_input_is_success_and_a_finished_rerun_too(tmp_path, model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not an image")
    write_image(folder / "b.png", 32, 32, seed=1)
    args = _encode(model_dir, tmp_path / "out", folder)
    assert cli.main(args) == 0
    assert "tokenized 1 items" in capsys.readouterr().out
    assert cli.main(args) == 0  # nothing left to do is not a failure
    assert "1 shards were already done" in capsys.readouterr().out


def test_strict_prints_the_error_and_no_skipped_warning(tmp_path, model_dir, capsys, caplog):
    folder = tmp_path / "in"
    write_image(folder / "a.png", 32, 32, seed=1)
    (folder / "b.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        assert cli.main([*_encode(model_dir, tmp_path / "out", folder), "--strict"]) == 1
    err = capsys.readouterr().err
    assert f"error (--strict): cannot read image '{folder / 'b.png'}'" in err
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped" not in err


def test_size_larger_than_the_image_scales_it_up_and_says_so(tmp_path, model_dir, capsys):
    small = write_image(tmp_path / "in" / "small.png", 101, 77, seed=3)
    large = write_image(tmp_path / "in" / "large.png", 300, 260, seed=4)
    out = tmp_path / "out"
    assert cli.main([*_encode(model_dir, out, small, large), "--size", "256"]) == 0
    assert "1 items were scaled up to --size" in capsys.readouterr().out
    rows = {Path(r["source"]).name: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    small_row = rows["small.png"]
    assert small_row["upscaled"] is True and (small_row["width"], small_row["height"]) == (101, 77)
    assert "upscaled" not in rows["large.png"]
    assert rows["small.png"]["shape"] == rows["large.png"]["shape"] == [64, 64]  # 256 / the model's 4
    assert not (out / "errors.jsonl").read_text()
    # the rule: the shorter side (after --resize) is scaled to --size, then the centre crop
    pixels = load_for_tokenization(small, ImagePreprocess(size=256, factor=4)).pixels
    assert tuple(pixels.shape) == (3, 256, 256)
    assert ImagePreprocess(size=256, factor=4).scales_up(101, 77)
    assert not ImagePreprocess(size=256, factor=4).scales_up(300, 256)
    assert not ImagePreprocess(resize=300, size=256, factor=4).scales_up(101, 77)  # --resize enlarged it first
    assert ImagePreprocess(resize=200, size=256, factor=4).scales_up(3000, 2000)
