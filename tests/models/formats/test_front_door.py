"""The one front door: ``load_tokenizer(path)``, ``tokenizer inspect``/``convert`` and ``encode --model PATH``
on a checkpoint of another project (a taming-layout file made here from a tiny model of ours)."""

from __future__ import annotations

import json

import pytest
import torch

from tokenizer import Tokenizer, TokenizerConfig, cli, load_tokenizer
from tokenizer.models.formats import families, inspect_checkpoint, load_checkpoint
from tokenizer.quantizers import VQConfig

CONFIG = TokenizerConfig(
    ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
    quantizer=VQConfig(codebook_size=32, dim=4, update="grad", kmeans_init=False, dead_code_threshold=0.0),
)  # fmt: skip


@pytest.fixture
def taming_ckpt(tmp_path):
    """A Lightning-style taming checkpoint of a random tiny model, and that model."""
    model = Tokenizer(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("quantize.")}
    state["quantize.embedding.weight"] = model.quantize.codebook.detach().clone()
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state}, path)
    return path, model


def _pixels(h=32, w=48):
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_load_tokenizer_detects_the_family_and_reproduces_the_model(taming_ckpt):
    path, reference = taming_ckpt
    model = load_tokenizer(path)
    x = _pixels()
    assert torch.equal(model.encode(x), reference.encode(x))
    assert torch.equal(load_tokenizer(path, format="taming").encode(x), reference.encode(x))
    assert torch.equal(load_checkpoint(path).encode(x), reference.encode(x))


def test_bad_formats_and_paths_are_named(taming_ckpt, tmp_path):
    path, _ = taming_ckpt
    with pytest.raises(ValueError, match="format must be one of"):
        load_tokenizer(path, format="no-such-family")
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_tokenizer(tmp_path / "nope.ckpt")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match="other.pt.*not a checkpoint of a known family"):
        load_tokenizer(other)
    assert "taming" in families()


def test_inspect_reports_family_and_config(taming_ckpt, capsys):
    path, _ = taming_ckpt
    found = inspect_checkpoint(path)
    assert found.family == "taming" and found.config.ch_mult == (1, 2)
    assert cli.main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "taming" and report["codebook_size"] == 32 and report["downsample_factor"] == 2
    assert report["config"]["z_channels"] == 8
    assert cli.main(["inspect", str(path)]) == 0
    assert "taming" in capsys.readouterr().out


def test_convert_writes_our_model_folder(taming_ckpt, tmp_path):
    path, reference = taming_ckpt
    out = tmp_path / "converted"
    assert cli.main(["convert", str(path), "--out", str(out)]) == 0
    model = Tokenizer.from_pretrained(out)
    x = _pixels()
    assert torch.equal(model.encode(x), reference.encode(x))
    torch.testing.assert_close(model.decode(model.encode(x)), reference.decode(reference.encode(x)))


def test_encode_and_decode_take_a_checkpoint_as_model(taming_ckpt, tmp_path):
    from PIL import Image

    path, _ = taming_ckpt
    photos = tmp_path / "photos"
    photos.mkdir()
    pixels = (torch.rand(16, 24, 3, generator=torch.Generator().manual_seed(2)) * 255).byte().numpy()
    Image.fromarray(pixels).save(photos / "a.png")
    tokens = tmp_path / "tokens"
    assert cli.main(["encode", str(photos), "--model", str(path), "--out", str(tokens), "--workers", "0"]) == 0
    row = json.loads((tokens / "manifest.jsonl").read_text().splitlines()[0])
    assert row["shape"] == [8, 12]
    assert cli.main(["decode", str(tokens), "--model", str(path), "--out", str(tmp_path / "recon")]) == 0
    assert len(list((tmp_path / "recon").rglob("*.png"))) == 1
