"""``Magvit2Tokenizer``: Open-MAGVIT2's LFQ image tokenizer (TencentARC Open-MAGVIT2 / SEED-Voken).

encoder -> LFQ -> decoder, with no ``quant_conv``/``post_quant_conv``: the encoder writes the ``z_channels``
latents the quantizer takes, and the decoder reads the ``{-1, +1}`` codes directly (also as the condition of
its adaptive group norms). Blocks: ``tokenizer.models.magvit2_blocks``; everything else (``encode``,
``decode``, ``forward``, ``save_pretrained``/``from_pretrained``) is ``Tokenizer``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..quantizers import LFQConfig, build_quantizer
from .config import MAX_LEVELS, _is_int, config_from_dict, config_to_dict
from .magvit2_blocks import GROUPS, Magvit2Decoder, Magvit2Encoder
from .tokenizer import Tokenizer


def _default_quantizer() -> LFQConfig:
    # the released 256px tokenizers: 18 bits per token (262,144 codes); the project's loss weights
    # (commitment 0.25, entropy 0.1 with equal per-sample / codebook weights, temperature 0.01)
    return LFQConfig(dim=18)


@dataclass(frozen=True)
class Magvit2Config:
    """Architecture of ``Magvit2Tokenizer``; the defaults are the released ImageNet 256px "L" tokenizer (f16).

    Level ``i`` works at ``ch * ch_mult[i]`` channels (a multiple of 32, for the group norms); every level but
    the last halves the resolution.
    """

    in_channels: int = 3  # pixel channels read by the encoder (RGB)
    out_channels: int = 3  # pixel channels written by the decoder (RGB)
    ch: int = 128  # base width
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multipliers per level; len - 1 halvings -> f16
    num_res_blocks: int = 4  # ResBlocks per level, in the encoder, the decoder and each middle
    z_channels: int = 18  # latent channels = LFQ bits (no quant convs)
    quantizer: LFQConfig = field(default_factory=_default_quantizer)  # dim must equal z_channels

    attn_resolutions: ClassVar[tuple[int, ...]] = ()  # no attention anywhere (read by `tokenizer info`)

    def __post_init__(self) -> None:
        if isinstance(self.ch_mult, list):
            object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        if not isinstance(self.ch_mult, tuple) or not all(_is_int(m) and m >= 1 for m in self.ch_mult):
            raise TypeError(f"ch_mult must be a tuple of ints >= 1, got {self.ch_mult!r}")
        if not 1 <= len(self.ch_mult) <= MAX_LEVELS:
            raise ValueError(f"ch_mult must hold 1 to {MAX_LEVELS} levels, got {self.ch_mult}")
        for name in ("in_channels", "out_channels", "ch", "num_res_blocks", "z_channels"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if any(self.ch * m % GROUPS for m in self.ch_mult):
            raise ValueError(
                f"ch * ch_mult[i] must be a multiple of {GROUPS} (the group norms), got ch={self.ch}, "
                f"ch_mult={self.ch_mult}"
            )
        if type(self.quantizer) is not LFQConfig:
            raise TypeError(f"quantizer must be an LFQConfig, got {type(self.quantizer).__name__}")
        if self.quantizer.dim != self.z_channels:
            raise ValueError(
                f"quantizer.dim must equal z_channels (there are no quant convs), got {self.quantizer.dim} "
                f"and {self.z_channels}"
            )

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent position along each side: ``2 ** (len(ch_mult) - 1)``."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def embed_dim(self) -> int:
        """Channels the quantizer takes in: ``z_channels``."""
        return self.z_channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples); the quantizer carries its ``"kind"`` tag."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Magvit2Config:
        """Inverse of ``to_dict``; missing fields take their defaults, unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)


class Magvit2Tokenizer(Tokenizer):
    """Open-MAGVIT2 image tokenizer: pixels ``[B, 3, H, W]`` in ``[-1, 1]`` -> ids ``[B, H/f, W/f]`` below
    ``2 ** z_channels`` (``index = sum_i [z_i > 0] 2^i`` over the latent channels ``i``) -> pixels.

    ``quant_conv`` and ``post_quant_conv`` are identities, so ``encode_to_latents`` is the encoder's output and
    the decoder reads the codes. Decoding needs a token grid of at least two positions.
    """

    config_class: ClassVar[type] = Magvit2Config
    model_kind: ClassVar[str] = "magvit2"

    def __init__(self, config: Magvit2Config | None = None) -> None:
        # Tokenizer.__init__ builds taming's bodies and quant convs; this model has its own bodies and none,
        # and keeps every other Tokenizer method.
        nn.Module.__init__(self)
        config = Magvit2Config() if config is None else config
        if type(config) is not Magvit2Config:
            raise TypeError(f"config must be a Magvit2Config, got {type(config).__name__}")
        self.config = config
        self.encoder = Magvit2Encoder(config)
        self.quant_conv = nn.Identity()
        self.quantize = build_quantizer(config.quantizer)
        self.post_quant_conv = nn.Identity()
        self.decoder = Magvit2Decoder(config)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, h*f, w*f]`` for codes ``[B, z_channels, h, w]`` (``QuantizerOutput.quantized`` or
        ``quantize.indices_to_codes``), ``h * w >= 2``. Differentiable."""
        channels = self.config.z_channels
        if not isinstance(codes, torch.Tensor) or codes.ndim != 4 or codes.shape[1] != channels:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be [B, {channels}, h, w], got {shape}")
        return self.decoder(codes.to(self.decoder.conv_in.weight.dtype))
