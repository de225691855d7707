import argparse
import json

import pytest
import torch

from tokenizer import Tokenizer, TokenizerConfig, __version__
from tokenizer.cli import main
from tokenizer.models import shipped_model_dir
from tokenizer.quantizers import VQConfig


def test_backends_reports_the_cpu_path(capsys, monkeypatch):
    monkeypatch.delenv("TOKENIZER_KERNELS", raising=False)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer {__version__}" in out
    assert "cpu: torch" in out or "cpu: triton" in out
    from kernels import _dispatch

    cpu = torch.device("cpu")
    if "cpu: triton" in out:
        expected = "triton"
    elif _dispatch.use_native(cpu):
        expected = f"native {_dispatch.CPU_KERNEL_ISAS[0]}"
    else:
        expected = "faiss" if _dispatch.use_faiss(cpu) else "torch"
    assert f"(nearest-code search: {expected})" in out
    built = "/".join(_dispatch.CPU_KERNEL_ISAS) if _dispatch.HAS_CPU_KERNELS else "not available"
    assert f"compiled CPU kernels: {built}" in out
    monkeypatch.setenv("TOKENIZER_KERNELS", "torch")
    assert main(["backends"]) == 0
    assert "cpu: torch (nearest-code search: torch)" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def _parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """The top-level parser ("") and each command's, as ``main`` builds them."""
    built: list[argparse.ArgumentParser] = []

    def capture(self, *args, **kwargs):
        built.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        main(["backends"])
    (top,) = built
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"": top, **commands.choices}


def test_every_option_has_help(monkeypatch):
    parsers = _parsers(monkeypatch)
    assert {"encode", "decode", "info", "demo", "train"} <= set(parsers)
    missing = [f"{name} {action.dest}" for name, p in parsers.items() for action in p._actions if not action.help]
    assert missing == []


def test_help_says_what_decode_writes_and_what_info_reads(monkeypatch):
    parsers = _parsers(monkeypatch)
    decode_out = next(a for a in parsers["decode"]._actions if a.dest == "out")
    assert "PNG" in decode_out.help and "mp4" in decode_out.help
    info_path = next(a for a in parsers["info"]._actions if a.dest == "path")
    assert "default" in info_path.help and "token folder" in info_path.help
    assert "exit status" in parsers["encode"].epilog


def test_info_default_describes_the_shipped_model(tmp_path, monkeypatch, capsys):
    """As --model finds it: the package's model, unless a local folder of that name holds a saved model."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # a local folder that is not a model does not hide the shipped one
    assert main(["info", "default"]) == 0
    text = capsys.readouterr().out
    assert f"shipped model  'default', in {shipped_model_dir('default')}" in text
    card = json.loads((shipped_model_dir("default") / "card.json").read_text())
    assert "vocabulary     15360" in text and f"held out       {', '.join(card['held_out'])}\n" in text

    assert main(["info", "default-video"]) == 0
    assert "frames         4 per token frame" in capsys.readouterr().out

    config = TokenizerConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                             quantizer=VQConfig(codebook_size=16, dim=4))  # fmt: skip
    Tokenizer(config).save_pretrained(tmp_path / "default")
    assert main(["info", "default"]) == 0
    text = capsys.readouterr().out
    assert "model folder   default" in text and "vocabulary     16" in text
