"""Inputs that are not regular files, or too large, are reported and never opened or read whole.

A regression here hangs (a FIFO) or eats memory (``/dev/zero``), so every test runs under a deadline: the
in-process ones under ``SIGALRM``, the end-to-end one in a subprocess with a timeout and a data-size limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenizer import cli
from tokenizer.data.files import (
    DEFAULT_MAX_IMAGE_BYTES,
    NOT_A_FILE,
    TOO_LARGE_FILE,
    InputFileError,
    check_input_file,
    read_input_file,
)
from tokenizer.data.sources import collect_inputs

from .conftest import write_image


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (a blocking open of a FIFO included)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: an input blocked the reader")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _errors(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    return {Path(row["source"]).name: row["kind"] for row in rows}


def _manifest_names(out: Path) -> list[str]:
    return [Path(json.loads(line)["source"]).name for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_the_file_checks_name_the_kind_and_never_read_past_the_limit(tmp_path):
    with deadline(10):
        os.mkfifo(tmp_path / "pipe.png")
        (tmp_path / "folder.png").mkdir()
        os.symlink("loop-b.png", tmp_path / "loop-a.png")
        os.symlink("loop-a.png", tmp_path / "loop-b.png")
        os.symlink("/dev/zero", tmp_path / "zero.png")
        (tmp_path / "ten.bin").write_bytes(b"0123456789")
        for name, what in [("pipe.png", "FIFO"), ("folder.png", "folder"), ("loop-a.png", "symlink loop"),
                           ("zero.png", "character device")]:  # fmt: skip
            for call in (check_input_file, read_input_file):
                with pytest.raises(InputFileError, match=what) as caught:
                    call(tmp_path / name, 1 << 20)
                assert caught.value.kind == NOT_A_FILE and name in str(caught.value)
        assert read_input_file(tmp_path / "ten.bin", 10) == b"0123456789"
        with pytest.raises(InputFileError, match="11 bytes, over the limit of 10") as caught:
            (tmp_path / "ten.bin").write_bytes(b"0123456789!")
            read_input_file(tmp_path / "ten.bin", 10)
        assert caught.value.kind == TOO_LARGE_FILE


def test_walking_a_folder_lists_what_is_not_a_regular_file_when_asked(tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "good.png", 8, 8, seed=0)
    write_image(folder / "photo.jpg" / "inside.png", 8, 8, seed=1)  # a folder named like an image
    (folder / "plain-folder").mkdir()
    os.mkfifo(folder / "pipe.png")
    os.symlink("b", folder / "a")
    os.symlink("a", folder / "b")
    os.symlink(".", folder / "self")  # a symlink to a folder: not followed, not listed

    def names(paths: list[Path]) -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in paths)

    assert names(collect_inputs([folder])) == ["good.png", "photo.jpg/inside.png"]
    assert names(collect_inputs([folder], special_files=True)) == [
        "a", "b", "good.png", "photo.jpg", "photo.jpg/inside.png", "pipe.png",
    ]  # fmt: skip
    assert names(collect_inputs([str(folder / "*.png")], special_files=True)) == ["good.png", "pipe.png"]
    with pytest.raises(FileNotFoundError):  # a FIFO named on the command line: reported, if asked
        collect_inputs([folder / "pipe.png"])
    assert collect_inputs([folder / "pipe.png"], special_files=True) == [folder / "pipe.png"]


def test_special_files_found_in_a_folder_are_reported_and_stop_a_strict_run(tmp_path, model_dir, capsys):
    folder = tmp_path / "in"
    write_image(folder / "good.png", 16, 16, seed=0)
    (folder / "photo.jpg").mkdir()
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.png", folder / "loop.png")
    args = ["encode", str(folder), "--model", str(model_dir), "--workers", "0"]
    with deadline(60):
        assert cli.main([*args, "--out", str(tmp_path / "out")]) == 0
        assert cli.main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    assert _manifest_names(tmp_path / "out") == ["good.png"]
    assert _errors(tmp_path / "out") == {"loop.png": NOT_A_FILE, "photo.jpg": NOT_A_FILE, "pipe.png": NOT_A_FILE}
    assert "is a symlink loop" in capsys.readouterr().err


def test_max_file_bytes_reports_larger_files(tmp_path, model_dir):
    folder = tmp_path / "in"
    small = write_image(folder / "small.png", 8, 8, seed=0).stat().st_size
    large = write_image(folder / "large.png", 64, 64, seed=1).stat().st_size
    assert small < large
    args = ["encode", str(folder), "--model", str(model_dir), "--workers", "0", "--out", str(tmp_path / "out")]
    assert cli.main([*args, "--max-file-bytes", str(small)]) == 0
    assert _manifest_names(tmp_path / "out") == ["small.png"]
    assert _errors(tmp_path / "out") == {"large.png": TOO_LARGE_FILE}
    with pytest.raises(SystemExit):
        cli.main([*args, "--max-file-bytes", "lots"])


def _limit_memory() -> None:
    limit = 3 << 30  # the encode needs a few hundred MB; reading /dev/zero or a 256 MiB file whole would not fit
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_list_naming_a_fifo_dev_zero_and_a_huge_sparse_file_ends_with_errors(tmp_path, model_dir):
    folder = tmp_path / "in"
    good = write_image(folder / "good.png", 16, 16, seed=0)
    os.mkfifo(folder / "pipe.png")
    os.symlink("/dev/zero", folder / "zero.png")
    with open(folder / "sparse.png", "wb") as f:  # no disk used; over the default image limit
        f.truncate(DEFAULT_MAX_IMAGE_BYTES + 1)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{folder / n}\n" for n in ("pipe.png", "zero.png", "sparse.png", "good.png")))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tokenizer", "encode", str(listing), "--model", str(model_dir), "--out",
               str(out), "--workers", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _manifest_names(out) == [good.name]
    assert _errors(out) == {"pipe.png": NOT_A_FILE, "zero.png": NOT_A_FILE, "sparse.png": TOO_LARGE_FILE}
    assert "3 errors" in done.stdout
