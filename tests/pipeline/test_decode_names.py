"""`tokenizer decode` output names: any input name that fits the filesystem decodes, and a rerun removes the
temporary files a killed decode left (ours only)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import Tokenizer, cli
from tokenizer.data.images import to_uint8
from tokenizer.reconstruct import output_name
from tokenizer.tokens import TokenDataset

from .conftest import write_image


def _encode(tmp_path, model_dir, images):
    out = tmp_path / "tokens"
    assert cli.main(["encode", str(images), "--model", str(model_dir), "--out", str(out), "--workers", "0"]) == 0
    return out


@pytest.mark.parametrize("stem", ["n" * 248, "é" * 124 + "-x"], ids=["248-ascii", "250-byte-utf8"])
def test_a_name_that_fits_the_filesystem_decodes(tmp_path, model_dir, stem):
    images = tmp_path / "images"
    write_image(images / f"{stem}.png", 24, 16, seed=1)
    tokens = _encode(tmp_path, model_dir, images)
    out = tmp_path / "decoded"
    assert cli.main(["decode", str(tokens), "--model", str(model_dir), "--out", str(out)]) == 0
    [written] = list(out.iterdir())
    assert len(os.fsencode(written.name)) <= 255
    assert written.name.startswith("00000000-" + stem[:100]) and written.suffix == ".png"
    with torch.no_grad():
        expected = to_uint8(Tokenizer.from_pretrained(model_dir).decode(TokenDataset(tokens)[0]["tokens"][None])[0])
    assert np.abs(np.asarray(Image.open(written)).astype(int) - expected.astype(int)).max() <= 1


def test_output_name_cuts_whole_characters_to_the_limit():
    assert output_name(3, "a/b/photo.jpg", ".png") == "00000003-photo.png"
    name = output_name(12, "dir/" + "é" * 200 + ".jpeg", ".mp4")
    assert len(os.fsencode(name)) <= 255 and len(os.fsencode(name)) >= 252  # at most one 2-byte char short
    assert name == "00000012-" + "é" * ((255 - 13) // 2) + ".mp4"
    assert output_name(0, "x" * 30 + ".png", ".png", limit=20) == "00000000-" + "x" * 7 + ".png"


def test_rerun_removes_our_leftover_temporary_files_only(tmp_path, model_dir):
    images = tmp_path / "images"
    for i in range(2):
        write_image(images / f"img{i}.png", 16, 16, seed=i)
    tokens = _encode(tmp_path, model_dir, images)
    out = tmp_path / "decoded"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftovers = [  # a decode killed mid-write: a short output name, and the stand-in of a long one
        out / f".00000000-img0.png.{dead.pid}.0123abcd.tmp",
        out / f".{'0123456789abcdef'}.{dead.pid}.89abcdef.tmp",
    ]
    alive = out / f".00000001-img1.png.{os.getpid()}.fedcba98.tmp"  # a writer still running
    unrelated = [out / ".notes.tmp", out / f".photo.jpg.{dead.pid}.abcdef12.tmp", out / "keep.png"]
    for path in [*leftovers, alive, *unrelated]:
        path.write_bytes(b"partial")
    assert cli.main(["decode", str(tokens), "--model", str(model_dir), "--out", str(out)]) == 0
    assert not any(path.exists() for path in leftovers)
    assert alive.exists() and all(path.read_bytes() == b"partial" for path in unrelated)
    assert sorted(p.name for p in out.glob("0000000*.png")) == ["00000000-img0.png", "00000001-img1.png"]
