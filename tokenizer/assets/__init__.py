"""Data shipped inside the package: real sample photographs (see samples/CREDITS.md)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent / "samples"


def sample_images() -> list[Path]:
    """The bundled sample photographs, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.png"))
