"""The output folder of ``tokenizer encode``: held by one run at a time, and never anyone else's files.

- A folder is ours when it holds ``run.json`` (written first, before any other file). A missing or empty
  folder becomes ours; a non-empty folder without ``run.json`` is refused (``OutputMismatchError``) before
  anything is written in it, since its ``errors.jsonl``, ``parts/`` or ``tokens-*`` files would be
  overwritten. A folder with a ``run.json`` describing another run is refused the same way.
- One run at a time: the process that claims the folder (rank 0 under torchrun; the other ranks of the same
  run share the folder and write their own shards) holds an exclusive ``flock`` on ``LOCK_FILE`` in it for
  the whole run. A second encoder on the folder is refused at once (``OutputBusyError``) rather than made to
  wait, so that a forgotten job never starts hours later on top of a finished folder. The kernel drops the
  lock when its holder exits or is killed: a crashed run never leaves the folder locked. The lock file stays
  (empty); removing it would let a third process lock a new file while the second holds the old one.
- After a killed run, only our own temporary files are removed: the ``.<name>.<pid>.<hex>.tmp`` names that
  ``_atomic`` gives the files a run writes (``run.json``, ``manifest.jsonl``, ``errors.jsonl``,
  ``tokens-NNNNN.safetensors``, ``parts/{manifest,errors,inputs}-NNNNN.jsonl``), and only under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._atomic import write_text_atomically
from ._distributed import broadcast_object

RUN_FILE = "run.json"
PARTS_DIR = "parts"
LOCK_FILE = ".tokenizer-encode.lock"

_TEMPORARY = r"\.{}\.\d+\.[0-9a-f]{{8}}\.tmp"  # _atomic.atomic_target's temporary name of {}
_OWN_TEMPORARIES = {
    "": re.compile(_TEMPORARY.format(r"(run\.json|manifest\.jsonl|errors\.jsonl|tokens-\d{5,}\.safetensors)")),
    PARTS_DIR: re.compile(_TEMPORARY.format(r"(manifest|errors|inputs)-\d{5,}\.jsonl")),
}
_RUN_TEMPORARY = re.compile(_TEMPORARY.format(re.escape(RUN_FILE)))


class OutputMismatchError(ValueError):
    """The output folder holds tokens made by another tokenizer, other settings or other inputs, or files
    that ``tokenizer encode`` did not make."""


class OutputBusyError(RuntimeError):
    """Another ``tokenizer encode`` is writing to the output folder."""


_ERRORS: dict[str, type[Exception]] = {e.__name__: e for e in (OutputMismatchError, OutputBusyError)}


@contextlib.contextmanager
def claimed_output(out_dir: Path, run: dict[str, Any], rank: int) -> Iterator[None]:
    """Hold ``out_dir`` for this run while the block runs (see the module docstring).

    Rank 0 checks the folder, takes the lock, removes our stale temporary files and writes ``run.json``
    while the other ranks wait; then they check ``run.json`` against their own ``run``. A failure on rank 0
    is raised on every rank (same class, same message), so no rank is left waiting for the others.
    """
    with contextlib.ExitStack() as held:
        failure: tuple[str, str] | None = None
        if rank == 0:
            try:
                _refuse_foreign(out_dir)  # before creating anything, the lock file included
                held.enter_context(_locked(out_dir))
                _claim(out_dir, run)
            except Exception as err:
                failure = (type(err).__name__, str(err))
                broadcast_object(failure)
                raise
        failure = broadcast_object(failure)
        if failure is not None:
            raise _ERRORS.get(failure[0], RuntimeError)(failure[1])
        if rank != 0:
            _compare_run(out_dir, run)
        yield


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"{out_dir} is being written by another `tokenizer encode` (it holds {out_dir / LOCK_FILE}); "
                "wait for that run to end, or use another --out folder"
            ) from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _refuse_foreign(out_dir: Path) -> None:
    """Raise if ``out_dir`` is a non-empty folder without ``run.json`` (other than a killed run's lock file
    and temporary ``run.json``)."""
    if not out_dir.is_dir() or (out_dir / RUN_FILE).is_file():
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE and not _RUN_TEMPORARY.fullmatch(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputMismatchError(
            f"{out_dir} is not empty ({shown}) and has no {RUN_FILE}, so `tokenizer encode` did not make it; "
            "nothing was written there (its files could be overwritten): use a new or empty --out folder"
        )


def _claim(out_dir: Path, run: dict[str, Any]) -> None:
    """Under the lock: check the folder again, remove our stale temporary files, write or check ``run.json``."""
    _refuse_foreign(out_dir)
    for sub, pattern in _OWN_TEMPORARIES.items():
        folder = out_dir / sub
        for stale in folder.iterdir() if folder.is_dir() else ():
            if pattern.fullmatch(stale.name) and stale.is_file():
                stale.unlink(missing_ok=True)
    if (out_dir / RUN_FILE).is_file():
        _compare_run(out_dir, run)
    else:
        write_text_atomically(out_dir / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")


LATER_KEYS = frozenset({"max_file_bytes"})  # run.json keys that older versions did not write


def _compare_run(out_dir: Path, run: dict[str, Any]) -> None:
    """Raise ``OutputMismatchError`` naming what differs between ``run`` and the folder's ``run.json``."""
    path = out_dir / RUN_FILE
    try:
        existing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OutputMismatchError(f"{path} cannot be read ({err}); use another --out folder") from None
    if not isinstance(existing, dict):
        raise OutputMismatchError(f"{path} is not a run description; use another --out folder")
    # a key added after the folder was made (LATER_KEYS) is not held against it: its value then is unknown
    differing = [key for key in run if (key in existing or key not in LATER_KEYS)
                 and existing.get(key) != json.loads(json.dumps(run[key]))]  # fmt: skip
    if differing:
        what = {"tokenizer": "a different tokenizer", "preprocess": "different preprocessing settings",
                "video": "different video sampling", "max_file_bytes": "a different --max-file-bytes"}  # fmt: skip
        reasons = sorted({what.get(key, "a different input list or shard size") for key in differing})
        raise OutputMismatchError(
            f"{out_dir} holds tokens made with {' and '.join(reasons)} (differs in: {', '.join(differing)}); "
            "use another --out folder, or delete this one to start over"
        )
