"""Progress of finished work, not of inputs read: the bars of ``tokenizer encode`` and ``tokenizer decode``.

An item counts once its output exists (encode: the model has produced its tokens; decode: its PNG or mp4 is
written), so the bar reaches 100% when the work does, not when the last file has been read. Items differ
wildly in size (a thumbnail, a 24-megapixel photo, a ten-minute video), so beside items/s the bar shows the
pixel rate and, once video frames are done, the frame rate, both over the seconds since the bar started::

    pixels/s = sum of frames x height x width over the finished work (an image is one frame) / seconds
    frames/s = video frames finished / seconds
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import final

from tqdm import tqdm


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``count / seconds`` with three significant digits and an SI prefix for large values, e.g.
    ``"0.0545 items/s"``, ``"3.21 Mpx/s"``; ``"- {unit}/s"`` when no time has passed."""
    if seconds <= 0:
        return f"- {unit}/s"
    rate = count / seconds
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.3g} {prefix}{unit}/s"
    return f"{rate:.3g} {unit}/s"


def work_rates(seconds: float, *, pixels: int, frames: int) -> str:
    """The size-aware rates shown beside items/s: pixels/s, and video frames/s when there are any."""
    rates = [format_rate(pixels, seconds, "px")]
    if frames:
        rates.append(format_rate(frames, seconds, "frames"))
    return ", ".join(rates)


@final
class WorkProgress:
    """A tqdm bar over ``total`` items that moves only as work finishes (see the module docstring).

    ``advance(1, pixels=..., frames=...)`` when an item's output exists; a long video may first report its
    windows with ``advance(pixels=..., frames=...)`` (no item), so the rates move while it is worked on.
    """

    def __init__(self, total: int, desc: str, *, enabled: bool = True) -> None:
        self.bar = tqdm(total=total, unit="item", desc=desc, disable=not enabled, dynamic_ncols=True)
        self.items = self.frames = self.pixels = 0  # frames: of videos only
        self.started = time.perf_counter()

    def advance(self, items: int = 0, *, pixels: int = 0, frames: int = 0) -> None:
        """Count ``items`` finished items, the ``pixels`` (frames x height x width) of the work just finished
        and, for videos, its ``frames``."""
        self.items += items
        self.pixels += pixels
        self.frames += frames
        rates = work_rates(time.perf_counter() - self.started, pixels=self.pixels, frames=self.frames)
        self.bar.set_postfix_str(rates, refresh=not items)  # update() below refreshes (rate-limited) anyway
        if items:
            self.bar.update(items)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> WorkProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
