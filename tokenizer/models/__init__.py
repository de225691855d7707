"""2-D VQGAN tokenizer: the encoder/decoder blocks, ``TokenizerConfig`` and the ``Tokenizer`` module."""

from __future__ import annotations

from .config import TokenizerConfig
from .tokenizer import Tokenizer

__all__ = ["Tokenizer", "TokenizerConfig"]
