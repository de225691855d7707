"""Reading LlamaGen VQ tokenizers (Sun et al. 2024, "Autoregressive Model Beats Diffusion", arXiv:2406.06525).

LlamaGen's ``tokenizer/tokenizer_image/vq_model.py`` (``VQModel``; released as ``vq_ds8_c2i.pt``,
``vq_ds16_c2i.pt``, ``vq_ds16_t2i.pt``) is taming's VQGAN under other module names, with a low-dimensional
cosine codebook:

- encoder: ``conv_in``, ``conv_blocks.{i}.res.{j}`` (ResnetBlocks), ``conv_blocks.{i}.attn.{j}`` (only at the
  last, lowest-resolution level), ``conv_blocks.{i}.downsample.conv``, ``mid.{0,1,2}`` (res, attn, res),
  ``norm_out``, ``conv_out``;
- decoder: ``conv_in``, ``mid.{0,1,2}``, then ``conv_blocks.{k}`` in the order they run, so ``conv_blocks.k``
  is level ``n - 1 - k`` (``conv_blocks.0`` is the lowest resolution, the one with attention), each with
  ``num_res_blocks + 1`` res blocks and an ``upsample.conv`` except the last;
- ``quant_conv`` (``z_channels -> codebook_embed_dim``), ``post_quant_conv``, and the codebook
  ``quantize.embedding.weight [K, d]`` (16384 x 8 in the releases) beside a ``quantize.codebook_used``
  usage log that a tokenizer does not need.

Blocks and numerics are taming's (GroupNorm(32, eps 1e-6), swish, ``softmax(q k^T / sqrt(C)) v`` attention,
right/bottom zero-pad + stride-2 conv down, nearest + conv up), so the map is a renaming onto our
``Tokenizer``. The quantizer (``codebook_l2_norm=True``, as in every release) l2-normalises the latents and
the codebook rows, picks ``k = argmin_k ||z/|z| - e_k/|e_k|||^2 = argmax_k cos(z, e_k)`` and decodes the
normalised row ``e_k/|e_k|``: our ``VQConfig(metric="cosine")`` with the codebook normalised on import.

Training checkpoints hold ``"model"`` and, when trained with ``--ema``, ``"ema"``; like LlamaGen's own
loaders (``vq_demo.py``, ``reconstruction_vq_ddp.py``) we take ``"ema"``, else ``"model"``, else
``"state_dict"``, else a bare state dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ...quantizers import VQConfig
from ..config import TokenizerConfig
from ._common import imported_vq, tensor_shape
from .reading import Checkpoint
from .taming import to_tokenizer_state

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

NAME = "llamagen"
DESCRIPTION = "LlamaGen VQ tokenizer (VQModel: vq_ds8_c2i.pt, vq_ds16_c2i.pt, vq_ds16_t2i.pt; cosine codebook)"

LLAMAGEN_CODEBOOK = "quantize.embedding.weight"
DROPPED = ("quantize.codebook_used",)  # LlamaGen's training-time usage log
PREFERENCE = ("ema", "model", "state_dict", "")  # LlamaGen's loaders prefer the EMA weights
RESOLUTION = 256  # the resolution attention levels are expressed against in the inferred config
MID_NAMES = ("block_1", "attn_1", "block_2")  # our names of LlamaGen's mid.0, mid.1, mid.2


def detect(checkpoint: Checkpoint) -> bool:
    """A LlamaGen ``VQModel``: ``conv_blocks.{i}.res.{j}`` levels, a ``mid`` list and the codebook."""
    return any(_is_llamagen(sd) for sd in checkpoint.state_dicts.values())


def _is_llamagen(state: Mapping[str, torch.Tensor]) -> bool:
    return all(
        name in state
        for name in (
            LLAMAGEN_CODEBOOK,
            "encoder.conv_blocks.0.res.0.conv1.weight",
            "encoder.mid.0.conv1.weight",
            "decoder.conv_blocks.0.res.0.conv1.weight",
        )
    )


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The LlamaGen state dict of a checkpoint, chosen as LlamaGen's loaders do (``PREFERENCE``), with
    ``quantize.codebook_used`` dropped."""
    candidates = {key: sd for key, sd in checkpoint.state_dicts.items() if _is_llamagen(sd)}
    if not candidates:
        raise ValueError(f"{str(checkpoint.source)!r} holds no LlamaGen VQModel state dict")
    key = next((k for k in PREFERENCE if k in candidates), next(iter(candidates)))
    return {k: v for k, v in candidates[key].items() if k not in DROPPED}


def load(checkpoint: Checkpoint, config: TokenizerConfig) -> Tokenizer:
    """The ``Tokenizer`` of a LlamaGen checkpoint, eval mode, CPU."""
    from ..tokenizer import Tokenizer

    if not isinstance(config, TokenizerConfig) or not isinstance(config.quantizer, VQConfig):
        raise TypeError("a LlamaGen checkpoint holds a VQ codebook: config must be a TokenizerConfig with a VQConfig")
    model = Tokenizer(config)
    state = to_tokenizer_names(state_dict(checkpoint), len(config.ch_mult))
    model._load_checked(to_tokenizer_state(state, model.state_dict()), str(checkpoint.source))
    return model.eval()


def _levels(state: Mapping[str, torch.Tensor], part: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(rf"{part}\.conv_blocks\.(\d+)\.", k))})


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))})


def infer_config(checkpoint: Checkpoint | Mapping[str, torch.Tensor]) -> TokenizerConfig:
    """The ``TokenizerConfig`` of a LlamaGen checkpoint (or its state dict), read off its tensor shapes.

    Attention sits at the last level only (LlamaGen's fixed placement), expressed as
    ``attn_resolutions = (256 // 2**(n-1),)`` against ``resolution=256``. The quantizer is LlamaGen's:
    gradient-trained, cosine, commitment beta 0.25, no k-means initialisation, no dead-code restarts.
    LlamaGen allows different encoder and decoder ``ch_mult``; our Tokenizer has one, so a checkpoint whose
    two differ raises ``ValueError``.
    """
    source = str(checkpoint.source) if isinstance(checkpoint, Checkpoint) else "the state dict"
    state = state_dict(checkpoint) if isinstance(checkpoint, Checkpoint) else checkpoint
    ch, in_channels = tensor_shape(state, "encoder.conv_in.weight")[:2]
    levels = _levels(state, "encoder")
    if not levels or levels != list(range(len(levels))):
        raise ValueError(f"{source}: encoder levels {levels} are not 0..n-1")
    n = len(levels)
    ch_mult = []
    for i in levels:
        width = tensor_shape(state, f"encoder.conv_blocks.{i}.res.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"{source}: encoder level {i} has {width} channels, not a multiple of ch={ch}")
        ch_mult.append(width // ch)
    decoder_levels = _levels(state, "decoder")
    decoder_widths = [tensor_shape(state, f"decoder.conv_blocks.{k}.res.0.conv1.weight")[0] for k in decoder_levels]
    if decoder_widths != [ch * m for m in reversed(ch_mult)]:
        raise ValueError(
            f"{source}: the decoder's level widths {decoder_widths[::-1]} (full resolution first) differ from the "
            f"encoder's {[ch * m for m in ch_mult]}; a Tokenizer has one ch_mult for both"
        )
    num_res_blocks = _count(state, "encoder.conv_blocks.0.res")
    if _count(state, "decoder.conv_blocks.0.res") != num_res_blocks + 1:
        raise ValueError(f"{source}: the decoder levels do not hold num_res_blocks + 1 = {num_res_blocks + 1} blocks")
    n_embed, embed_dim = tensor_shape(state, LLAMAGEN_CODEBOOK)
    quantizer = imported_vq(n_embed, embed_dim, metric="cosine")
    return TokenizerConfig(
        in_channels=in_channels,
        out_channels=tensor_shape(state, "decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=num_res_blocks,
        attn_resolutions=(RESOLUTION // 2 ** (n - 1),),
        resolution=RESOLUTION,
        z_channels=tensor_shape(state, "quant_conv.weight")[1],
        dropout=0.0,
        quantizer=quantizer,
    )


def to_tokenizer_names(state: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename a LlamaGen state dict to taming's (our) names; the codebook rows are l2-normalised, since
    LlamaGen normalises them at every use and decodes the normalised row.

    ``encoder.conv_blocks.i.{res,attn}.j`` -> ``encoder.down.i.{block,attn}.j``;
    ``decoder.conv_blocks.k.{res,attn}.j`` -> ``decoder.up.(levels-1-k).{block,attn}.j`` (and ``upsample``);
    ``{encoder,decoder}.mid.{0,1,2}`` -> ``mid.{block_1,attn_1,block_2}``; unknown names pass through, so a
    strict load names them.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if m := re.match(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn|downsample|upsample)\.(.*)", name):
            part, level, kind, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            new_part = "down" if part == "encoder" else "up"
            new_level = level if part == "encoder" else levels - 1 - level
            name = f"{part}.{new_part}.{new_level}.{'block' if kind == 'res' else kind}.{rest}"
        elif (m := re.match(r"(encoder|decoder)\.mid\.([012])\.(.*)", name)) is not None:
            name = f"{m.group(1)}.mid.{MID_NAMES[int(m.group(2))]}.{m.group(3)}"
        elif name == LLAMAGEN_CODEBOOK:
            name, tensor = "quantize.codebook", F.normalize(tensor.float(), dim=1)
        out[name] = tensor
    return out
