import pytest

from tokenizer import __version__
from tokenizer.cli import main


def test_backends_reports_the_cpu_path(capsys, monkeypatch):
    monkeypatch.delenv("TOKENIZER_KERNELS", raising=False)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer {__version__}" in out
    assert "cpu: torch" in out or "cpu: triton" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
