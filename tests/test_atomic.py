"""Atomic writes: temporary names that always fit, and cleanup of the caller's own leftovers only."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from tokenizer._atomic import TEMPORARY, _umask, atomic_target, remove_leftovers, temporary_stand_in


def test_a_short_target_keeps_its_name_in_the_temporary_name(tmp_path):
    with atomic_target(tmp_path / "run.json") as temporary:
        temporary.write_text("{}")
        match = TEMPORARY.fullmatch(temporary.name)
        assert match and match["name"] == "run.json" and int(match["pid"]) == os.getpid()
        assert temporary.parent == tmp_path
    assert (tmp_path / "run.json").read_text() == "{}" and not temporary.exists()


@pytest.mark.parametrize("name", ["t" * 251 + ".bin", "é" * 120 + ".png"])
def test_a_target_name_up_to_255_bytes_is_written(tmp_path, name):
    target = tmp_path / name
    with atomic_target(target) as temporary:
        assert len(os.fsencode(temporary.name)) <= 255
        assert TEMPORARY.fullmatch(temporary.name)["name"] == temporary_stand_in(name)
        temporary.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_stand_in_is_16_hex_digits_of_the_name():
    assert re.fullmatch(r"[0-9a-f]{16}", temporary_stand_in("x" * 300))
    assert temporary_stand_in("a" * 300) != temporary_stand_in("a" * 299)


def test_two_writers_of_one_target_get_distinct_temporaries(tmp_path):
    with atomic_target(tmp_path / "x") as first, atomic_target(tmp_path / "x") as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert (tmp_path / "x").read_bytes() == b"1"  # the outer write finished last


def test_remove_leftovers_only_takes_dead_writers_files_of_our_names(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = re.compile(r"out-\d+\.png|[0-9a-f]{16}")
    leftovers = [tmp_path / f".out-1.png.{dead.pid}.0011aaff.tmp", tmp_path / f".{'ab' * 8}.{dead.pid}.0011aaff.tmp"]
    keep = [
        tmp_path / f".out-2.png.{os.getpid()}.0011aaff.tmp",  # this process is still writing it
        tmp_path / f".photo.jpg.{dead.pid}.0011aaff.tmp",  # a name we do not write
        tmp_path / f".out-3.png.{dead.pid}.0011AAFF.tmp",  # not the temporary pattern
        tmp_path / f".out-3.png.{dead.pid}.0011aaff.tmp.bak",
        tmp_path / "out-4.png",
    ]
    for path in [*leftovers, *keep]:
        path.write_bytes(b"x")
    (tmp_path / f".out-5.png.{dead.pid}.0011aaff.tmp").mkdir()  # a folder is never ours
    assert remove_leftovers(tmp_path, ours) == sorted(leftovers)
    assert all(path.exists() for path in keep)
    assert remove_leftovers(tmp_path / "missing", ours) == []


@pytest.mark.parametrize("pid", [2**40, 2**31 + 5])
def test_a_pid_no_process_can_have_counts_as_dead(tmp_path, pid):
    leftover = tmp_path / f".out-1.png.{pid}.01234567.tmp"
    leftover.write_bytes(b"x")
    assert remove_leftovers(tmp_path, re.compile(r"out-1\.png")) == [leftover]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_file_its_writer_made_private_gets_the_mode_of_a_new_file(tmp_path, umask):
    """safetensors' save_file creates 0600 files; what atomic_target renames into place is readable like any new
    file (0o666 less the umask), so a model or shard written to a shared folder can be read by the others."""
    from safetensors.torch import save_file

    previous = os.umask(umask)
    try:
        with atomic_target(tmp_path / "model.safetensors") as temporary:
            save_file({"w": torch.zeros(2)}, str(temporary))
            os.chmod(temporary, 0o600)  # whichever version of safetensors: a private file
        with atomic_target(tmp_path / "notes.txt") as temporary:
            temporary.write_text("plain open()")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "notes.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_modes_are_only_ever_widened_and_a_refused_chmod_loses_nothing(tmp_path, monkeypatch):
    with atomic_target(tmp_path / "shared.txt") as temporary:
        temporary.write_text("a folder's ACL gave the group write access")
        os.chmod(temporary, 0o664)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o664 | (0o666 & ~_umask())

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)  # a mount without modes
    with atomic_target(tmp_path / "model.bin") as temporary:
        temporary.write_bytes(b"weights")
    assert (tmp_path / "model.bin").read_bytes() == b"weights"
