"""``VideoTokenizer``: the causal 3-D tokenizer that tokenizes videos and images with one model.

Clips have ``1 + k * temporal_factor`` frames and give ``1 + k`` token frames: the first frame is encoded on
its own (so an image ``[B, 3, H, W]``, treated as a 1-frame clip, gets ``[B, h, w]`` tokens equal to that
clip's), and each later group of ``temporal_factor`` frames shares one token frame. Tokens of frame group
``g`` never depend on later frames. Long videos go through ``encode_windows`` / ``decode_windows``: windows
chained through a ``CausalState`` each generator holds give the tokens of one pass over the whole video, in
memory bounded by the window; the model itself keeps no stream state, so an open or abandoned generator
never changes ``encode``/``decode`` or another generator. Layers: ``tokenizer.models.causal``; everything
else is the image tokenizer's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from .blocks import Ops
from .causal import CausalState, causal_ops
from .config import TokenizerConfig
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class VideoTokenizerConfig(TokenizerConfig):
    """``TokenizerConfig`` plus time: the first ``log2(temporal_factor)`` downsamplings also halve time."""

    temporal_factor: int = 4  # frames per token frame after the first; a power of two, at most downsample_factor

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size != 1 or self.num_resamples is not None:
            raise ValueError("the causal video tokenizer takes neither patch_size nor num_resamples (image options)")
        factor = self.temporal_factor
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
            raise ValueError(f"temporal_factor must be a power of two >= 1, got {factor!r}")
        if factor > self.downsample_factor:
            raise ValueError(
                f"temporal_factor={factor} needs {self.temporal_downsamplings} downsamplings but ch_mult "
                f"{self.ch_mult} has {len(self.ch_mult) - 1}"
            )

    @property
    def temporal_downsamplings(self) -> int:
        return self.temporal_factor.bit_length() - 1


class VideoTokenizer(Tokenizer):
    """Causal video tokenizer: pixels ``[B, 3, T, H, W]`` (``T = 1 + k * temporal_factor``) or images
    ``[B, 3, H, W]``, in ``[-1, 1]``, to token grids ``[B, 1 + k, H/f, W/f]`` / ``[B, H/f, W/f]``."""

    config_class: ClassVar[type[TokenizerConfig]] = VideoTokenizerConfig
    model_kind: ClassVar[str] = "video"
    grid_ranks: ClassVar[tuple[int, ...]] = (2, 3)

    @classmethod
    def layer_ops(cls, config: TokenizerConfig) -> Ops:
        return causal_ops(config.temporal_downsamplings, config.norm_groups)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (inside its causal conv), for the VQGAN adaptive GAN weight."""
        return self.decoder.conv_out.conv.weight

    @property
    def temporal_factor(self) -> int:
        return self.config.temporal_factor

    def frames_for(self, token_frames: int) -> int:
        """Frames of a clip that gives ``token_frames`` token frames: ``1 + (token_frames - 1) * temporal_factor``."""
        return 1 + (token_frames - 1) * self.temporal_factor

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        super()._check_pixels(pixels)
        if pixels.ndim == 5 and (pixels.shape[2] - 1) % self.temporal_factor:
            raise ValueError(
                f"a clip must have 1 + k * {self.temporal_factor} frames (1, {1 + self.temporal_factor}, "
                f"{1 + 2 * self.temporal_factor}, ...), got {pixels.shape[2]} (shape {tuple(pixels.shape)})"
            )

    @torch.no_grad()
    def encode_windows(self, windows: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Token frames of a long video given as consecutive windows ``[B, 3, t_i, H, W]``.

        The first window has ``1 + k * temporal_factor`` frames, every later one a multiple of
        ``temporal_factor``; each yields its token frames ``[B, t_i', h, w]``. Concatenated, they equal
        ``encode`` of the whole video (up to floating-point rounding at code boundaries).
        """
        state = CausalState(self)
        for number, window in enumerate(windows):
            self._check_window(window, first=number == 0)
            with state.active():  # active only while this window runs, never across the yield
                tokens = self.quantize(self.quant_conv(self.encoder(window))).indices
            yield tokens

    @torch.no_grad()
    def decode_windows(self, token_windows: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Pixels of a long video from consecutive token windows (the first holding token frame 0):
        a window of ``n`` token frames gives ``frames_for(n)`` frames first, ``n * temporal_factor`` later."""
        state = CausalState(self)
        for tokens in token_windows:
            with state.active():
                pixels = self.decode(tokens)
            yield pixels

    def _check_window(self, window: torch.Tensor, first: bool) -> None:
        Tokenizer._check_pixels(self, window)
        frames = window.shape[2] if window.ndim == 5 else 0
        ok = (frames - 1) % self.temporal_factor == 0 if first else frames % self.temporal_factor == 0
        if window.ndim != 5 or frames == 0 or not ok:
            rule = "1 + k * tf" if first else "a positive multiple of tf"
            raise ValueError(
                f"{'the first' if first else 'a later'} window must be [B, 3, T, H, W] with T {rule} "
                f"(tf = {self.temporal_factor}), got shape {tuple(window.shape)}"
            )

    @classmethod
    def from_taming(cls, *args: object, **kwargs: object) -> Tokenizer:
        raise TypeError("taming checkpoints are 2-D image VQGANs: load them with Tokenizer.from_taming")
