"""Data shipped inside the package: real sample photographs and a clip (see samples/CREDITS.md), and the
default tokenizers (models/default, models/default-video; see models/README.md)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent / "samples"
MODELS_DIR = Path(__file__).parent / "models"


def sample_images() -> list[Path]:
    """The bundled sample photographs, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.png"))


def sample_videos() -> list[Path]:
    """The bundled sample clips, sorted by name."""
    return sorted(SAMPLES_DIR.glob("*.mp4"))
