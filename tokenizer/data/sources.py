"""Turning command-line inputs into one sorted list of files: folders, globs, and list files.

An input is a folder (searched recursively; hidden files and folders skipped), a glob pattern
(``**`` allowed), a ``.txt`` list (one path per line, ``#`` comments; relative paths are relative to the
list's folder), a ``.jsonl`` list (one JSON string or object with a ``"path"`` per line), or a file.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable
from pathlib import Path

from .images import IMAGE_EXTENSIONS
from .video import VIDEO_EXTENSIONS

LIST_EXTENSIONS = frozenset({".txt", ".jsonl"})


def media_kind(path: str | Path) -> str:
    """``"image"``, ``"video"`` or ``"other"``, by file extension (a GIF counts as an image: its first frame)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "other"


def collect_inputs(specs: Iterable[str | Path]) -> list[Path]:
    """Every file the inputs name, sorted and without duplicates.

    Files in folders and globs are kept whatever their extension (the pipeline reports the ones it cannot
    read); list files are expanded, not tokenized. Raises FileNotFoundError naming an input that matches
    nothing.
    """
    found: set[Path] = set()
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            found.update(_walk(path))
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            found.update(_read_list(path))
        elif path.is_file():
            found.add(path)
        elif glob.has_magic(text):
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            files = {m for m in matches if m.is_file()} | {f for m in matches if m.is_dir() for f in _walk(m)}
            if not files:
                raise FileNotFoundError(f"input pattern {text!r} matches no files")
            found.update(files)
        else:
            raise FileNotFoundError(f"input {text!r} does not exist")
    return sorted(found, key=str)


def _walk(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
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
