"""WebDataset tar shards: one item per key, read by byte range without unpacking.

Listing is one pass over the tar's 512-byte headers with the standard ``tarfile`` (it seeks over the
payloads, so a 10 GB shard costs one small read per member); each member's data offset and size are kept,
and reading an item later is a seek and a read per member, in any process. Only uncompressed tars are
read (WebDataset shards are; a ``.tar.gz`` cannot be read by range).

Grouping follows WebDataset: member ``dir/key.ext`` belongs to sample ``dir/key``, where ``ext`` is all of
the file name after its first dot (``a.seg.png`` -> key ``a``, extension ``seg.png``). Of a sample's members,
the first whose extension is an image or a video extension (``jpg``, ``png``, ``webp``, ``mp4``, ``webm``, ...)
is its media; an image is read into memory, a video is left in place (a ``FileRange`` of the tar, which the
video reader streams by seeking, so a video member costs no more memory than a loose video file); ``json``,
``txt`` and ``cls`` members become ``meta`` under their extension; others are ignored. Files whose name
starts with a dot (``._x.jpg`` from macOS) and non-file members are skipped.

A tar cut short lists the samples before the cut, then one ``BrokenContainer`` item (source: the tar's path)
saying so; a member whose data runs past the end of the file is ``unreadable`` when read.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from .byte_range import FileRange
from .containers import MISSING_MEDIA, BrokenContainer, ContainedItem, MemberError, Payload, parse_meta
from .files import TOO_LARGE_FILE, UNREADABLE
from .images import IMAGE_EXTENSIONS
from .sources import media_kind
from .video_probe import VIDEO_EXTENSIONS

META_EXTENSIONS = ("json", "txt", "cls")
MAX_META_BYTES = 1 << 20  # a caption or a JSON record; larger metadata members are refused


@dataclass(frozen=True)
class TarSample:
    """The members of one WebDataset sample: ``(extension, data offset, size)`` each, in tar order."""

    path: Path
    key: str
    members: tuple[tuple[str, int, int], ...]

    @property
    def source(self) -> str:
        return f"{self.path}#{self.key}"

    def read(self, max_bytes: int, max_video_bytes: int | None = None) -> Payload:
        """The first media member and the metadata members, parsed: an image's bytes (at most ``max_bytes``),
        or a video's place in the tar (at most ``max_video_bytes``, None: ``max_bytes``; not read here)."""
        media = next((m for m in self.members if _is_media(m[0])), None)
        if media is None:
            found = ", ".join(f"{self.key}.{ext}" for ext, _, _ in self.members)
            raise MemberError(MISSING_MEDIA, f"{self.source}: no image or video member (found {found})")
        extension, offset, size = media
        video = None
        if media_kind(f"{self.key}.{extension}") == "video":  # as for loose files, a GIF is an image (its first frame)
            video = FileRange(self.path, offset, size, f"{self.source}.{extension}")
            self._check_size(media, max_bytes if max_video_bytes is None else max_video_bytes)
        meta = {}
        with open(self.path, "rb") as f:
            data = b"" if video is not None else self._member(f, media, max_bytes)
            for ext, offset, size in self.members:
                if ext in META_EXTENSIONS and ext not in meta:
                    meta[ext] = parse_meta(ext, self._member(f, (ext, offset, size), MAX_META_BYTES), self.source)
        return Payload(data, extension, meta, video)

    def _check_size(self, member: tuple[str, int, int], max_bytes: int) -> None:
        extension, _, size = member
        if size > max_bytes:
            name = f"{self.source}.{extension}"
            raise MemberError(TOO_LARGE_FILE, f"{name!r} is {size} bytes, over the limit of {max_bytes} bytes")

    def _member(self, f, member: tuple[str, int, int], max_bytes: int) -> bytes:
        self._check_size(member, max_bytes)
        extension, offset, size = member
        name = f"{self.source}.{extension}"
        f.seek(offset)
        data = f.read(size)
        if len(data) < size:
            raise MemberError(UNREADABLE, f"{name!r} is cut short: the tar ends {size - len(data)} bytes early")
        return data


def list_tar(path: Path) -> list[ContainedItem]:
    """The samples of tar ``path`` in the order of their first member; one ``BrokenContainer`` if it is not
    a readable (uncompressed) tar at all."""
    groups: dict[str, list[tuple[str, int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # keep no TarInfo per member: a shard may hold millions
                name = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or name.startswith(".") or "." not in name:
                    continue
                key = info.name[: len(info.name) - len(name)] + name.split(".", 1)[0]
                extension = name.split(".", 1)[1].lower()
                groups.setdefault(key, []).append((extension, info.offset_data, info.size))
    except (tarfile.TarError, OSError, EOFError) as err:
        if not groups:
            return [BrokenContainer(path, UNREADABLE, f"cannot read tar {str(path)!r}: {err}")]
        cut = BrokenContainer(path, UNREADABLE, f"tar {str(path)!r} is cut short after {len(groups)} samples: {err}")
        return [*(TarSample(path, key, tuple(members)) for key, members in groups.items()), cut]
    return [TarSample(path, key, tuple(members)) for key, members in groups.items()]


def _is_media(extension: str) -> bool:
    last = "." + extension.rsplit(".", 1)[-1]
    return "." not in extension and (last in IMAGE_EXTENSIONS or last in VIDEO_EXTENSIONS)
