"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Everything is written to a temporary name beside the target, ``.<name>.<pid>.<8 random hex>.tmp``, where
``<name>`` is the target's name or, when that would pass the 255-byte limit of a file name, the first 16 hex
digits of its sha256 (so any name that fits the filesystem can be written). A folder scan that skips dot-files
never sees it; ``remove_leftovers`` removes the ones a killed writer left. It is flushed to disk, given at
least the permission bits ``open()`` gives a new file (umask applied), and renamed over the target; the folder
is synced so the rename itself survives a crash. On failure the temporary file is removed and the old target
stays; an ``OSError`` (a full or read-only disk) then names the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_target(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s new contents to; it replaces ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(_temporary_name(target.name))
    try:
        yield temporary
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        _open_up(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None and error.filename in (None, str(temporary)):
            error.filename = str(target)  # name the file the caller asked for (a failed write names none)
        raise
    _sync_folder(target.parent)


def _open_up(path: Path) -> None:
    """Add the permission bits ``open()`` gives a new file (``0o666`` less the umask) to ``path``'s mode.

    Some writers (safetensors' save_file) create their file private (0600) whatever the umask: a model or token
    shard written here becomes readable by those a new file would be readable by. Bits are only added, never
    removed (a folder's default ACL may have granted more), and a filesystem without modes (some network or
    FUSE mounts) keeps its own."""
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode & 0o7777
        wanted = mode | (0o666 & ~_umask())
        if wanted != mode:
            os.chmod(path, wanted)


def _umask() -> int:
    """The process umask, read from /proc (Linux) without changing it; elsewhere set and restored once."""
    global _UMASK_FALLBACK
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    if _UMASK_FALLBACK is None:
        _UMASK_FALLBACK = os.umask(0o022)
        os.umask(_UMASK_FALLBACK)
    return _UMASK_FALLBACK


_UMASK_FALLBACK: int | None = None
NAME_MAX = 255  # bytes in one file name (ext4, XFS, APFS, NTFS)
TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp")  # atomic_target's names


def _temporary_name(name: str) -> str:
    pid_and_random = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temporary = f".{name}.{pid_and_random}.tmp"
    if len(os.fsencode(temporary)) > NAME_MAX:
        temporary = f".{temporary_stand_in(name)}.{pid_and_random}.tmp"
    return temporary


def temporary_stand_in(name: str) -> str:
    """What stands for a target ``name`` too long to appear in its temporary name: 16 hex digits of its
    sha256."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def remove_leftovers(folder: str | os.PathLike[str], ours: re.Pattern[str]) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only ``TEMPORARY`` names whose ``<name>`` part fully matches ``ours`` (the caller's own target names and,
    for long ones, ``temporary_stand_in``'s 16 hex digits) and whose writing process is no longer running on
    this machine are removed: a concurrent writer keeps its file, nobody else's file is touched, and a reused
    pid at worst leaves a leftover for the next run. Returns the removed paths (none if ``folder`` does not
    exist).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        match = TEMPORARY.fullmatch(path.name)
        if match and ours.fullmatch(match["name"]) and not _process_running(int(match["pid"])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except (ProcessLookupError, OverflowError):  # no such process, or a number no pid can be
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return True


def write_bytes_atomically(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_target(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomically(target: str | os.PathLike[str], text: str) -> None:
    with atomic_target(target) as temporary:
        temporary.write_text(text)


def _sync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename durable
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
