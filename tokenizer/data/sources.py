"""Turning command-line inputs into one sorted list of files: folders, globs, and list files.

An input is a folder (searched recursively; hidden files and folders skipped), a glob pattern
(``**`` allowed), a ``.txt`` list (one path per line, ``#`` comments; relative paths are relative to the
list's folder), a ``.jsonl`` list (one JSON string or object with a ``"path"`` per line), or a file. Brace
patterns expand first, as in a shell: ``shards/{00000..00099}.tar`` (zero padding kept), ``{train,test}/``.
Tar shards and Parquet files are inputs like any file; the pipeline expands them into samples
(``containers``).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .images import IMAGE_EXTENSIONS
from .video_probe import VIDEO_EXTENSIONS

LIST_EXTENSIONS = frozenset({".txt", ".jsonl"})


def media_kind(path: str | Path) -> str:
    """``"image"``, ``"video"`` or ``"other"``, by file extension (a GIF counts as an image: its first frame)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "other"


def collect_inputs(specs: Iterable[str | Path], *, special_files: bool = False) -> list[Path]:
    """Every file the inputs name, sorted and without duplicates.

    Files in folders and globs are kept whatever their extension (the pipeline reports the ones it cannot
    read); list files are expanded, not tokenized. With ``special_files``, what is found but is not a regular
    file is kept too, for the caller to report rather than lose silently: FIFOs, sockets, devices, dangling
    symlinks and symlink loops, and folders named like an image or a video (``photo.jpg/``, whose files are
    still searched). Folders are otherwise searched, never listed; symlinks to folders are not followed.
    Raises FileNotFoundError naming an input that matches nothing.
    """
    found: set[Path] = set()
    for spec in specs:
        text = str(spec)
        path = Path(text)
        expanded = [text] if os.path.lexists(path) else expand_braces(text)  # a name with braces is itself
        if expanded != [text]:
            found.update(collect_inputs(expanded, special_files=special_files))
        elif path.is_dir():
            found.update(_walk(path, special_files))
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            found.update(_read_list(path))
        elif path.is_file() or (special_files and os.path.lexists(path)):
            found.add(path)
        elif glob.has_magic(text):
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            files = {m for m in matches if _listed(m, special_files)}
            files |= {f for m in matches if m.is_dir() for f in _walk(m, special_files)}
            if not files:
                raise FileNotFoundError(f"input pattern {text!r} matches no files")
            found.update(files)
        else:
            raise FileNotFoundError(f"input {text!r} does not exist")
    return sorted(found, key=str)


_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def expand_braces(text: str) -> list[str]:
    """Shell brace expansion of ``text``, left to right: ``{3..12}``, ``{00000..00999}`` (padded to the wider
    end when an end has a leading zero) and ``{a,b,c}``; other braces stay as they are."""
    match = _BRACES.search(text)
    if match is None:
        return [text]
    head, body, tail = text[: match.start()], match.group(1), text[match.end() :]
    numbers = _RANGE.fullmatch(body)
    if numbers:
        first, last = int(numbers.group(1)), int(numbers.group(2))
        padded = any(len(end.lstrip("-")) > 1 and end.lstrip("-").startswith("0") for end in numbers.groups())
        width = max(map(len, numbers.groups())) if padded else 0
        step = 1 if last >= first else -1
        choices = [f"{n:0{width}d}" for n in range(first, last + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        return [head + "{" + body + "}" + rest for rest in expand_braces(tail)]
    return [expansion for choice in choices for expansion in expand_braces(head + choice + tail)]


def _listed(path: Path, special_files: bool) -> bool:
    """Whether a found path is an input: a regular file, or (``special_files``) anything but a folder, or a
    folder named like an image or a video."""
    return path.is_file() or (special_files and (not path.is_dir() or media_kind(path) != "other"))


def _walk(folder: Path, special_files: bool) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if _listed(p, special_files) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _read_list(list_file: Path) -> list[Path]:
    paths = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if list_file.suffix.lower() == ".jsonl":
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{list_file}:{number}: not JSON ({err})") from err
            line = entry.get("path") if isinstance(entry, dict) else entry
            if not isinstance(line, str):
                raise ValueError(f"{list_file}:{number}: expected a path string or an object with a 'path'")
        path = Path(line)
        paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths
