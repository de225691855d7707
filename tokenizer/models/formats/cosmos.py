"""Reading NVIDIA Cosmos-Tokenizer discrete image tokenizers (Cosmos-0.1-Tokenizer-DI8x8, -DI16x16).

A released model is a folder of TorchScript archives, read as tensors (``reading.read_checkpoint``):

- ``encoder.jit``: ``Sequential(encoder, quant_conv, quantizer)``, pixels -> ``(indices, codes, loss)``;
- ``decoder.jit``: ``Sequential(inv_quant, post_quant_conv, decoder)``, indices -> pixels, with the quantizer's
  buffers under ``inv_quant.quantizer.*``;
- ``autoencoder.jit``: the whole ``DiscreteImageTokenizer`` (``encoder``, ``decoder``, ``quant_conv``,
  ``post_quant_conv``, ``quantizer``), enough on its own.

The networks (``cosmos_tokenizer/modules/layers2d.py``) are taming's encoder/decoder under taming's names, so
they map onto ``Tokenizer`` one to one, with two config options: ``patch_size`` (the encoder starts with
``log2(p)`` Haar wavelet rounds, ``3 -> 3 p^2`` channels, and the decoder ends with their inverse) and
``num_resamples`` (only ``log2(spatial_compression / p)`` levels resample: the encoder's first levels and the
decoder's last). DI8x8 and DI16x16 share ``channels=128``, ``channels_mult=(2, 4, 4)``, ``patch_size=4``,
``z_channels=256`` and FSQ levels ``(8, 8, 8, 5, 5, 5)`` (65,536 codes) without projections; they differ in
``num_resamples`` (1 and 2). The quantizer is ours (``FSQConfig``): bound ``tanh(z + shift) * half - offset``,
round, ``q / (L // 2)``, index ``sum_i (q_i + L_i // 2) prod_{j<i} L_j``, as Cosmos' ``FSQuantizer`` computes.

The archives also hold constant buffers: the patchers' ``wavelets`` (which tell ``"haar"`` from
``"rearrange"``) and the quantizer's ``_levels`` (the FSQ levels), ``_basis``, ``implicit_codebook``; they
configure the model and are not loaded as weights. Cosmos' residual FSQ, VQ and LFQ variants and its video
tokenizers were not released as DI models and are not read here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ...quantizers import FSQConfig
from ..config import TokenizerConfig
from ._common import tensor_shape
from .reading import Checkpoint

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

NAME = "cosmos"
DESCRIPTION = "NVIDIA Cosmos-Tokenizer discrete image (DI8x8/DI16x16: encoder.jit + decoder.jit, or autoencoder.jit)"

ENCODER_LEVELS = "quantizer._levels"  # in encoder.jit and autoencoder.jit
DECODER_LEVELS = "inv_quant.quantizer._levels"  # in decoder.jit
COSMOS_RESOLUTION = 256  # the resolution attention levels are expressed against when inferring a config
RGB = 3
_CONSTANT_OWNERS = ("encoder.patcher.", "decoder.unpatcher.", "quantizer.")
_CONSTANT_BUFFERS = ("wavelets", "_arange", "_levels", "_basis", "implicit_codebook")


def _is_encoder(state: Mapping[str, torch.Tensor]) -> bool:
    conv_in = state.get("encoder.conv_in.weight")
    return ENCODER_LEVELS in state and "quant_conv.weight" in state and conv_in is not None and conv_in.ndim == 4


def _is_decoder(state: Mapping[str, torch.Tensor]) -> bool:
    conv_out = state.get("decoder.conv_out.weight")
    levels = DECODER_LEVELS if DECODER_LEVELS in state else ENCODER_LEVELS
    return levels in state and "post_quant_conv.weight" in state and conv_out is not None and conv_out.ndim == 4


def detect(checkpoint: Checkpoint) -> bool:
    """A Cosmos DI archive: 2-D ``encoder.*``/``quant_conv`` or ``decoder.*``/``post_quant_conv`` tensors beside the
    FSQ quantizer's ``_levels`` buffer."""
    return any(_is_encoder(sd) or _is_decoder(sd) for sd in checkpoint.state_dicts.values())


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """One autoencoder-layout state dict from the encoder and decoder archives (or an autoencoder archive):
    the decoder's ``inv_quant.quantizer.*`` become ``quantizer.*``; ``ValueError`` when a half is missing or
    the two halves disagree on the FSQ levels."""
    source = str(checkpoint.source)
    encoders = [sd for sd in checkpoint.state_dicts.values() if _is_encoder(sd)]
    decoders = [sd for sd in checkpoint.state_dicts.values() if _is_decoder(sd)]
    if not encoders or not decoders:
        half, file = ("encoder", "encoder.jit") if not encoders else ("decoder", "decoder.jit")
        raise ValueError(
            f"{source!r} holds no Cosmos {half}: a Cosmos DI tokenizer needs encoder.jit and decoder.jit "
            f"(or autoencoder.jit) in one folder; {file} is missing"
        )
    encoder, decoder = encoders[0], decoders[0]  # an autoencoder archive is both
    merged = {k: v for k, v in encoder.items() if not k.startswith(("decoder.", "post_quant_conv."))}
    for key, value in decoder.items():
        if key.startswith(("decoder.", "post_quant_conv.")):
            merged[key] = value
    decoder_levels = decoder.get(DECODER_LEVELS, decoder.get(ENCODER_LEVELS))
    if not torch.equal(merged[ENCODER_LEVELS].long(), decoder_levels.long()):
        raise ValueError(
            f"{source!r}: the encoder's FSQ levels {merged[ENCODER_LEVELS].tolist()} differ from the decoder's "
            f"{decoder_levels.tolist()}; are encoder.jit and decoder.jit from one model?"
        )
    return merged


def _levels_with(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


def _patch_method(state: Mapping[str, torch.Tensor]) -> str:
    wavelets = state.get("encoder.patcher.wavelets", state.get("decoder.unpatcher.wavelets"))
    if wavelets is None or torch.allclose(wavelets.float(), torch.full((2,), math.sqrt(0.5))):
        return "haar"  # the DI configs' choice
    if torch.equal(wavelets.float(), torch.ones(2)):
        return "rearrange"
    raise ValueError(f"cannot infer the config: unknown patcher wavelets {wavelets.tolist()}")


def infer_config(checkpoint: Checkpoint | Mapping[str, torch.Tensor]) -> TokenizerConfig:
    """The ``TokenizerConfig`` of a Cosmos DI checkpoint (or its merged ``state_dict``), read off tensor shapes
    and the quantizer's ``_levels`` buffer. Pixels are RGB; attention levels are expressed as
    ``attn_resolutions`` against ``resolution=256`` (the released models attend only in the middle)."""
    state = state_dict(checkpoint) if isinstance(checkpoint, Checkpoint) else checkpoint
    ch, patched_in = tensor_shape(state, "encoder.conv_in.weight")[:2]
    patch_size = math.isqrt(patched_in // RGB)
    if RGB * patch_size**2 != patched_in or tensor_shape(state, "decoder.conv_out.weight")[0] != patched_in:
        raise ValueError(
            f"cannot infer the config: encoder.conv_in takes {patched_in} and decoder.conv_out gives "
            f"{state['decoder.conv_out.weight'].shape[0]} channels, not both 3 * patch_size^2"
        )
    levels = _levels_with(state, r"encoder\.down\.(\d+)\.")
    n = len(levels)
    if not levels or levels != list(range(n)) or _levels_with(state, r"decoder\.up\.(\d+)\.") != levels:
        raise ValueError(
            f"cannot infer the config: encoder levels {levels} are not 0..n-1 or differ from the decoder's"
        )
    blocks = _levels_with(state, r"encoder\.down\.0\.block\.(\d+)\.")
    if _levels_with(state, r"decoder\.up\.0\.block\.(\d+)\.") != list(range(len(blocks) + 1)):
        raise ValueError(
            "cannot infer the config: the decoder levels must hold one ResnetBlock more than the encoder's"
        )
    ch_mult = []
    for i in levels:
        width = tensor_shape(state, f"encoder.down.{i}.block.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"cannot infer the config: level {i} has {width} channels, not a multiple of ch={ch}")
        ch_mult.append(width // ch)
    down = _levels_with(state, r"encoder\.down\.(\d+)\.downsample\.")
    up = _levels_with(state, r"decoder\.up\.(\d+)\.upsample\.")
    if down != list(range(len(down))) or up != list(range(n - len(down), n)):
        raise ValueError(
            f"cannot infer the config: encoder levels {down} downsample and decoder levels {up} upsample; "
            "expected the encoder's first levels and as many of the decoder's last"
        )
    attention = _levels_with(state, r"encoder\.down\.(\d+)\.attn\.")
    if _levels_with(state, r"decoder\.up\.(\d+)\.attn\.") != attention:
        raise ValueError("cannot infer the config: the encoder and decoder attend at different levels")
    fsq_levels = tuple(int(v) for v in state[ENCODER_LEVELS].tolist())
    embed_dim, z_channels = tensor_shape(state, "quant_conv.weight")[:2]
    if embed_dim != len(fsq_levels):
        raise ValueError(f"cannot infer the config: quant_conv gives {embed_dim} channels for FSQ levels {fsq_levels}")
    return TokenizerConfig(
        in_channels=RGB,
        out_channels=RGB,
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=len(blocks),
        attn_resolutions=tuple(COSMOS_RESOLUTION // 2**i for i in attention),
        resolution=COSMOS_RESOLUTION,
        z_channels=z_channels,
        dropout=0.0,
        quantizer=FSQConfig(levels=fsq_levels),
        mid_attention="encoder.mid.attn_1.q.weight" in state,
        patch_size=patch_size,
        patch_method=_patch_method(state),
        num_resamples=None if len(down) == n - 1 else len(down),
    )


def to_tokenizer_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``Tokenizer`` weights of a merged Cosmos state dict: every name is ours already; the constant
    buffers (patcher wavelets, FSQ levels/basis/implicit codebook) are dropped."""
    return {
        k: v
        for k, v in state.items()
        if not (k.startswith(_CONSTANT_OWNERS) and k.rsplit(".", 1)[1] in _CONSTANT_BUFFERS)
    }


def load(checkpoint: Checkpoint, config: TokenizerConfig) -> Tokenizer:
    """The ``Tokenizer`` of a Cosmos DI checkpoint, eval mode, CPU, fp32 (bf16 archives are widened)."""
    from ..tokenizer import Tokenizer

    if not isinstance(config, TokenizerConfig) or not isinstance(config.quantizer, FSQConfig):
        raise TypeError("a Cosmos DI checkpoint quantizes with FSQ: config must be a TokenizerConfig with an FSQConfig")
    model = Tokenizer(config)
    model._load_checked(to_tokenizer_state(state_dict(checkpoint)), str(checkpoint.source))
    return model.eval()
