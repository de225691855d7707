"""``TokenizerConfig``: the architecture of a 2-D VQGAN-style tokenizer, stored as ``config.json``.

The defaults describe taming-transformers' ImageNet f16 VQGAN (16,384 codes, 16x downsampling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..quantizers import FSQConfig, GumbelConfig, LFQConfig, QuantizerConfig, ResidualConfig, VQConfig
from .patching import PATCH_METHODS

# The "kind" tag each quantizer config carries in config.json.
QUANTIZER_KINDS: dict[str, type] = {
    "vq": VQConfig,
    "fsq": FSQConfig,
    "lfq": LFQConfig,
    "residual": ResidualConfig,
    "gumbel": GumbelConfig,
}
MAX_LEVELS = 6  # len(ch_mult) at most 6: downsampling factors 1, 2, 4, ..., 32


def _default_quantizer() -> VQConfig:
    # taming's f16 vocabulary and code width; EMA codebook with k-means init and dead-code restarts.
    return VQConfig(codebook_size=16384, dim=256)


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of ``Tokenizer``: encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder.

    Level ``i`` of the encoder/decoder works at ``ch * ch_mult[i]`` channels; every level but the last
    halves the resolution (the first ``num_resamples`` when set; the decoder doubles at its last ones), and
    ``patch_size > 1`` folds ``p x p`` pixel patches into channels first (``tokenizer.models.patching``), so
    the latent grid is ``H / downsample_factor x W / downsample_factor``.
    Channel counts feed ``GroupNorm(norm_groups)``, so ``ch * ch_mult[i]`` must be a multiple of ``norm_groups``.
    A GroupNorm makes every group of channels zero-mean over the image, so one channel per group (``ch == 32``
    with taming's 32 groups) is an instance norm that drops each channel's image mean before the decoder's
    ``conv_out``; taming keeps 4 channels per group (``ch=128``, 32 groups).
    """

    in_channels: int = 3  # pixel channels read by the encoder (RGB)
    out_channels: int = 3  # pixel channels written by the decoder (RGB)
    ch: int = 128  # base width; level i has ch * ch_mult[i] channels (taming's value)
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multipliers per level; len - 1 halvings -> f16
    num_res_blocks: int = 2  # ResnetBlocks per encoder level; the decoder has one more per level
    attn_resolutions: tuple[int, ...] = (16,)  # self-attention at levels whose resolution // 2**level is listed
    resolution: int = 256  # nominal image size; only places attention (taming's convention), any H, W work
    z_channels: int = 256  # channels between the encoder/decoder bodies and the 1x1 quant convs
    dropout: float = 0.0  # dropout probability inside every ResnetBlock
    quantizer: QuantizerConfig = field(default_factory=_default_quantizer)  # its input width is embed_dim
    mid_attention: bool = True  # self-attention between the two middle ResnetBlocks (LDM's vq-f4-noattn: False)
    norm_groups: int = 32  # groups of every GroupNorm in the encoder and decoder (taming's value)
    patch_size: int = 1  # pixels per side folded into channels before conv_in, unfolded after conv_out (Cosmos: 4)
    patch_method: str = "haar"  # how patches fold: "haar" wavelet sub-bands or "rearrange" (pixel unshuffle)
    num_resamples: int | None = None  # encoder levels 0..n-1 halve, decoder's last n double; None: len(ch_mult)-1

    def __post_init__(self) -> None:
        for name in ("ch_mult", "attn_resolutions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise TypeError(f"{name} must be a tuple of ints, got {type(value).__name__}")
            if not all(_is_int(v) for v in getattr(self, name)):
                raise TypeError(f"{name} must hold ints, got {getattr(self, name)!r}")
        for name in ("in_channels", "out_channels", "ch", "num_res_blocks", "resolution", "z_channels", "norm_groups"):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not self.ch_mult:
            raise ValueError("ch_mult must hold at least one level, got ()")
        if len(self.ch_mult) > MAX_LEVELS:
            raise ValueError(
                f"ch_mult has {len(self.ch_mult)} levels, so a downsample factor of {2 ** (len(self.ch_mult) - 1)}; "
                f"at most {MAX_LEVELS} levels (factor {2 ** (MAX_LEVELS - 1)}) are supported"
            )
        if any(m < 1 for m in self.ch_mult):
            raise ValueError(f"ch_mult entries must be at least 1, got {self.ch_mult}")
        if any(self.ch * m % self.norm_groups for m in self.ch_mult):
            raise ValueError(
                f"ch * ch_mult[i] must be a multiple of norm_groups={self.norm_groups} (GroupNorm), got ch={self.ch}, "
                f"ch_mult={self.ch_mult}"
            )
        if any(r < 1 for r in self.attn_resolutions):
            raise ValueError(f"attn_resolutions entries must be at least 1, got {self.attn_resolutions}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"dropout must be a float, got {type(self.dropout).__name__}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not isinstance(self.mid_attention, bool):
            raise TypeError(f"mid_attention must be a bool, got {type(self.mid_attention).__name__}")
        if not _is_int(self.patch_size) or self.patch_size < 1 or self.patch_size & (self.patch_size - 1):
            raise ValueError(f"patch_size must be a power of two >= 1, got {self.patch_size!r}")
        if self.patch_method not in PATCH_METHODS:
            raise ValueError(f"patch_method must be one of {PATCH_METHODS}, got {self.patch_method!r}")
        if self.num_resamples is not None and (
            not _is_int(self.num_resamples) or not 0 <= self.num_resamples <= len(self.ch_mult)
        ):
            raise ValueError(f"num_resamples must be None or an int in [0, len(ch_mult)], got {self.num_resamples!r}")
        if type(self.quantizer) not in QUANTIZER_KINDS.values():
            raise TypeError(
                f"quantizer must be one of {', '.join(t.__name__ for t in QUANTIZER_KINDS.values())}, "
                f"got {type(self.quantizer).__name__}"
            )

    @property
    def downsample_factor(self) -> int:
        """How many pixels one latent position covers along each side: ``patch_size * 2 ** resamples``
        (``2 ** (len(ch_mult) - 1)`` by default)."""
        return self.patch_size * 2**self.resamples

    @property
    def resamples(self) -> int:
        """How many levels halve the resolution in the encoder (and double it in the decoder)."""
        return len(self.ch_mult) - 1 if self.num_resamples is None else self.num_resamples

    @property
    def embed_dim(self) -> int:
        """Channels the quantizer takes in (the output width of ``quant_conv``)."""
        q = self.quantizer
        if isinstance(q, ResidualConfig):
            q = q.quantizer
        if isinstance(q, FSQConfig):
            return q.dim or len(q.resolved_levels())
        return q.dim

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """Levels ``i`` that hold self-attention: those with ``resolution // 2**i`` in ``attn_resolutions``."""
        return tuple(i for i in range(len(self.ch_mult)) if self.resolution // 2**i in self.attn_resolutions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples); the quantizer carries a ``"kind"`` tag."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Inverse of ``to_dict``; missing fields take their defaults, unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A model config dataclass as a JSON-ready dict: lists for tuples, the quantizer with its ``"kind"`` tag."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = _quantizer_to_dict(value) if f.name == "quantizer" else _jsonable(value)
    return out


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of ``config_to_dict`` for the config class ``cls``: lists become tuples, missing fields take their
    defaults, unknown keys raise ``ValueError`` naming them."""
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} must be a dict, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys are {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "quantizer"}
    if "quantizer" in data:
        kwargs["quantizer"] = _quantizer_from_dict(data["quantizer"])
    return cls(**kwargs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _quantizer_to_dict(config: QuantizerConfig) -> dict[str, Any]:
    kind = next(k for k, t in QUANTIZER_KINDS.items() if type(config) is t)
    out: dict[str, Any] = {"kind": kind}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = _quantizer_to_dict(value) if dataclasses.is_dataclass(value) else _jsonable(value)
    return out


def _quantizer_from_dict(data: Any, where: str = "quantizer") -> QuantizerConfig:
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a dict with a 'kind' key, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in QUANTIZER_KINDS:
        raise ValueError(f"{where}.kind must be one of {sorted(QUANTIZER_KINDS)}, got {kind!r}")
    config_type = QUANTIZER_KINDS[kind]
    names = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - names - {"kind"})
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown} for kind {kind!r}; known keys are {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "kind"}
    if kind == "residual" and "quantizer" in kwargs:
        kwargs["quantizer"] = _quantizer_from_dict(kwargs["quantizer"], where=f"{where}.quantizer")
    return config_type(**kwargs)
