"""Every user-facing failure of the CLI is one line on stderr naming the file and the cause, exit code 2, with
nothing half-written; our own bugs keep their traceback (issue 13, item 7)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.pipeline.conftest import tiny_model, write_image
from tokenizer import cli


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, three images and the token folder the encoder makes of them (made once, then copied)."""
    root = tmp_path_factory.mktemp("cli-errors")
    tiny_model().save_pretrained(root / "model")
    for i in range(3):
        write_image(root / "images" / f"photo{i}.png", 16, 16, seed=i)
    args = ["encode", str(root / "images"), "--model", str(root / "model"), "--out", str(root / "tokens")]
    assert cli.main([*args, "--workers", "0"]) == 0
    return {name: root / name for name in ("model", "images", "tokens")}


def _copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / source.name))


def _fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    """Run ``main(argv)``: exit code 2 and stderr ending in one ``error:`` line that holds each of ``names``."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_out_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, folders: dict[str, Path]) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    encode = ["encode", str(folders["images"]), "--model", str(folders["model"]), "--out", str(out), "--workers", "0"]
    line = _fails_in_one_line(capsys, encode, str(out))
    assert line == f"error: {out}: exists and is not a folder"
    line = _fails_in_one_line(
        capsys, ["decode", str(folders["tokens"]), "--model", str(folders["model"]), "--out", str(out)]
    )
    assert line == f"error: {out}: exists and is not a folder"
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_names_the_file_and_leaves_nothing_half_written(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    folders: dict[str, Path],
    code: int,
) -> None:
    # As root, chmod does not stop writes: the disk refuses at fsync, where a full disk reports itself.
    def refuse(descriptor: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    out = tmp_path / "tokens"
    encode = ["encode", str(folders["images"]), "--model", str(folders["model"]), "--out", str(out), "--workers", "0"]
    line = _fails_in_one_line(capsys, encode, str(out), os.strerror(code))
    assert line.startswith(f"error: {out}{os.sep}")
    assert not [name for name in _files(out) if name.endswith((".tmp", ".safetensors"))]
    assert not (out / "manifest.jsonl").exists()

    decoded = tmp_path / "decoded"
    decode = ["decode", str(folders["tokens"]), "--model", str(folders["model"]), "--out", str(decoded)]
    line = _fails_in_one_line(capsys, decode, str(decoded), os.strerror(code))
    assert line.endswith(f".png: {os.strerror(code)}")
    assert _files(decoded) == []


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("position", None, ["manifest.jsonl:2", "'position'"]),
        ("position", 7, ["tokens-00000.safetensors", "item 7"]),
        ("source", ["a"], ["manifest.jsonl:2", "'source'"]),
        ("kind", "video", ["tokens-00000.safetensors[1]", "kind 'video'"]),
        ("kind", 3, ["manifest.jsonl:2", "'kind'"]),
    ],
)
def test_bad_manifest_rows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, folders: dict[str, Path], key: str, value: object, names: list
) -> None:
    tokens = _copy(folders["tokens"], tmp_path)
    manifest = tokens / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1][key] = value
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _fails_in_one_line(capsys, ["info", str(tokens)], *names)
    decoded = tmp_path / "decoded"
    _fails_in_one_line(capsys, ["decode", str(tokens), "--model", str(folders["model"]), "--out", str(decoded)], *names)


def test_a_pickle_saved_as_model_safetensors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, folders: dict[str, Path]
) -> None:
    model = _copy(folders["model"], tmp_path)
    weights = model / "model.safetensors"
    torch.save({"weight": torch.zeros(3)}, weights)
    _fails_in_one_line(capsys, ["info", str(model)], str(weights), "not a readable safetensors file")
    out = tmp_path / "tokens"
    encode = ["encode", str(folders["images"]), "--model", str(model), "--out", str(out), "--workers", "0"]
    _fails_in_one_line(capsys, encode, str(weights), "not a readable safetensors file")
    assert _files(out) == []


def test_a_config_that_disagrees_with_the_weights_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, folders: dict[str, Path]
) -> None:
    model = _copy(folders["model"], tmp_path)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "ch": 64}))
    line = _fails_in_one_line(capsys, ["info", str(model)], str(model / "model.safetensors"), "shape mismatches")
    assert "do not match the model's config: shape mismatches (" in line
    assert "encoder.conv_in.weight: checkpoint (32, 3, 3, 3), model (64, 3, 3, 3); " in line


def test_our_own_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path]) -> None:
    def buggy(path: object) -> str:
        raise TypeError("a bug of ours")

    monkeypatch.setattr("tokenizer.info.describe", buggy)
    with pytest.raises(TypeError, match="a bug of ours"):
        cli.main(["info", str(folders["tokens"])])
