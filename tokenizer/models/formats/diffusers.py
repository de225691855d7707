"""Reading diffusers ``VQModel`` checkpoints (LDM VQ first stages, aMUSEd's VQ-GAN, VQ-Diffusion's VQ-VAE).

A diffusers VQModel is a folder: ``config.json`` (``"_class_name": "VQModel"``) beside
``diffusion_pytorch_model.safetensors`` (or ``.bin``). Its network is taming's VQGAN under other names, so it
maps tensor for tensor onto our ``Tokenizer``:

============================================================  ===============================================
diffusers                                                     ours (taming names)
============================================================  ===============================================
``encoder.down_blocks.{i}.resnets.{j}.conv_shortcut``         ``encoder.down.{i}.block.{j}.nin_shortcut``
``encoder.down_blocks.{i}.attentions.{j}``                    ``encoder.down.{i}.attn.{j}``
``encoder.down_blocks.{i}.downsamplers.0.conv``               ``encoder.down.{i}.downsample.conv``
``{en,de}coder.mid_block.resnets.{0,1}`` / ``.attentions.0``  ``{en,de}coder.mid.block_{1,2}`` / ``.attn_1``
``decoder.up_blocks.{i}.{resnets,attentions}.{j}``            ``decoder.up.{n-1-i}.{block,attn}.{j}``
``decoder.up_blocks.{i}.upsamplers.0.conv``                   ``decoder.up.{n-1-i}.upsample.conv``
``{en,de}coder.conv_norm_out``                                ``{en,de}coder.norm_out``
``quantize.embedding.weight``                                 ``quantize.codebook``
============================================================  ===============================================

The decoder's ``up_blocks`` run from the lowest resolution up, the reverse of taming's ``up`` levels. An
attention block's ``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (``Linear`` layers; the names of
diffusers < 0.15 ``query``, ``key``, ``value``, ``proj_attn`` too) become ``norm``, ``q``, ``k``, ``v``,
``proj_out``, 1x1 convolutions with the weight ``W [C, C]`` reshaped to ``[C, C, 1, 1]``: for every position
``x``, ``Linear(x) = W x + b`` is exactly the 1x1 convolution. diffusers builds every VAE attention block with
``attention_head_dim`` equal to its channel count, so it is single-head ``softmax(q k^T / sqrt(C)) v`` as ours.
The rest agrees term by term: ResnetBlocks with ``GroupNorm(norm_num_groups, eps=1e-6)``, SiLU and output
scale 1; downsampling by a ``(0, 1, 0, 1)`` zero pad then a stride-2 3x3 convolution (the encoder's
``downsample_padding=0``); nearest-neighbour x2 upsampling then a 3x3 convolution.

diffusers' ``VectorQuantizer`` picks ``k = argmin_k ||z - e_k||_2`` (``torch.cdist``) over the codebook, the
l2 nearest code our ``VQConfig(metric="l2")`` picks; its ``legacy``/``beta`` only weigh the training loss.
``VQModel.decode(indices, force_not_quantize=True, shape=...)`` with ``lookup_from_codebook`` reads the same
codes ``decode(indices)`` does here. ``scaling_factor`` and ``force_upcast`` concern latent diffusion, not tokens.

Not supported (refused with the reason): ``norm_type="spatial"`` (MoVQ's spatially conditioned decoder norms),
activations other than SiLU, and encoder/decoder attention at different levels. ``norm_num_groups`` comes from
``config.json`` (32, taming's and diffusers' default, for a bare state dict).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ...quantizers import VQConfig
from ..config import TokenizerConfig
from ._common import imported_vq, tensor_shape
from .reading import Checkpoint
from .taming import TAMING_RESOLUTION, to_tokenizer_state

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

NAME = "diffusers"
DESCRIPTION = "diffusers VQModel (folder with config.json + diffusion_pytorch_model.safetensors/.bin)"

CODEBOOK = "quantize.embedding.weight"
MARKER = "encoder.down_blocks.0.resnets.0.conv1.weight"
NORM_GROUPS = 32  # diffusers' default norm_num_groups
ACTIVATIONS = ("silu", "swish")

# attention sub-layers: diffusers >= 0.15 names, then the older ones, -> ours
ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}


def detect(checkpoint: Checkpoint) -> bool:
    """A diffusers ``VQModel``: a ``config.json`` naming the class, or diffusers' tensor names and a codebook."""
    if isinstance(checkpoint.config, Mapping) and checkpoint.config.get("_class_name") == "VQModel":
        return True
    return any(_is_diffusers(sd) for sd in checkpoint.state_dicts.values())


def _is_diffusers(state: Mapping[str, torch.Tensor]) -> bool:
    return CODEBOOK in state and MARKER in state


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The diffusers VQModel state dict of a checkpoint: the first with its tensor names and an fp32 codebook
    (a folder may also hold ``diffusion_pytorch_model.fp16.safetensors``), else the first with its names."""
    found = [sd for sd in checkpoint.state_dicts.values() if _is_diffusers(sd)]
    if not found:
        raise ValueError(
            f"{str(checkpoint.source)!r} holds no diffusers VQModel state dict (no {MARKER!r} and {CODEBOOK!r})"
        )
    return next((sd for sd in found if sd[CODEBOOK].dtype == torch.float32), found[0])


def check_diffusers_config(config: Mapping[str, Any] | None, source: str) -> None:
    """Refuse a ``config.json`` whose VQModel our ``Tokenizer`` cannot reproduce; None (no config) passes."""
    if config is None:
        return
    where = f"{source!r} (config.json)"
    name = config.get("_class_name", "VQModel")
    if name != "VQModel":
        raise ValueError(f"{where} describes a {name}, not a VQModel; only diffusers VQModel folders load")
    if config.get("norm_type", "group") != "group":
        raise ValueError(
            f"{where} has norm_type={config['norm_type']!r}: MoVQ's spatially conditioned decoder norms are a "
            "different architecture, not supported; only norm_type='group' loads"
        )
    if config.get("act_fn", "silu") not in ACTIVATIONS:
        raise ValueError(f"{where} has act_fn={config['act_fn']!r}; only 'silu' is supported")
    for key, known in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        for kind in config.get(key, ()):
            if kind not in (known, f"Attn{known}"):
                raise ValueError(f"{where}: {key} holds {kind!r}; only {known} and Attn{known} are supported")
    groups = config.get("norm_num_groups", NORM_GROUPS)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where} has norm_num_groups={groups!r}; it must be a positive int (GroupNorm's group count)")
    uneven = [c for c in config.get("block_out_channels", ()) if not isinstance(c, int) or c % groups]
    if uneven:
        raise ValueError(
            f"{where} has norm_num_groups={groups}, which does not divide block_out_channels "
            f"{list(config['block_out_channels'])} (GroupNorm needs a multiple of the group count)"
        )


def load(checkpoint: Checkpoint, config: TokenizerConfig) -> Tokenizer:
    """The ``Tokenizer`` of a diffusers VQModel checkpoint, eval mode, CPU."""
    from ..tokenizer import Tokenizer

    if not isinstance(config, TokenizerConfig) or not isinstance(config.quantizer, VQConfig):
        raise TypeError("a diffusers VQModel holds a VQ codebook: config must be a TokenizerConfig with a VQConfig")
    check_diffusers_config(checkpoint.config, str(checkpoint.source))
    model = Tokenizer(config)
    state = to_taming_names(state_dict(checkpoint), len(config.ch_mult))
    model._load_checked(to_tokenizer_state(state, model.state_dict()), str(checkpoint.source))
    return model.eval()


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


def infer_config(checkpoint: Checkpoint | Mapping[str, torch.Tensor]) -> TokenizerConfig:
    """The ``TokenizerConfig`` of a diffusers VQModel, read off its tensor shapes (a bare state dict works).

    A ``config.json`` beside the weights is checked for what shapes cannot show (norm type, activation) and gives
    the GroupNorm group count. Levels with ``Attn*Block2D`` become ``attn_resolutions`` against ``resolution=256`` (taming's
    convention); the quantizer is a gradient-trained l2 ``VQConfig`` without k-means init or restarts.
    """
    norm_groups = NORM_GROUPS
    if isinstance(checkpoint, Checkpoint):
        check_diffusers_config(checkpoint.config, str(checkpoint.source))
        norm_groups = (checkpoint.config or {}).get("norm_num_groups", NORM_GROUPS)
        state = state_dict(checkpoint)
    else:
        state = checkpoint
    if any(".conv_norm_out.norm_layer." in k or ".conv_y." in k for k in state):
        raise ValueError("the checkpoint has spatially conditioned norms (MoVQ, norm_type='spatial'): not supported")
    ch, in_channels = tensor_shape(state, "encoder.conv_in.weight")[:2]
    levels = _indices(state, r"encoder\.down_blocks\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise ValueError(f"cannot infer the config: encoder down_blocks {levels} are not 0..n-1")
    ch_mult = []
    for i in levels:
        width = tensor_shape(state, f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(
                f"cannot infer the config: block_out_channels[{i}] = {width} is not a multiple of "
                f"block_out_channels[0] = {ch}, which taming's layout (ch * ch_mult) needs"
            )
        ch_mult.append(width // ch)
    n = len(levels)
    encoder_attention = [i for i in levels if any(k.startswith(f"encoder.down_blocks.{i}.attentions.") for k in state)]
    decoder_attention = [
        n - 1 - i for i in range(n) if any(k.startswith(f"decoder.up_blocks.{i}.attentions.") for k in state)
    ]
    if sorted(decoder_attention) != encoder_attention:
        raise ValueError(
            f"the encoder has attention at levels {encoder_attention} but the decoder at {sorted(decoder_attention)}; "
            "only mirrored attention levels are supported"
        )
    mid_attention = any(k.startswith("encoder.mid_block.attentions.") for k in state)
    if mid_attention != any(k.startswith("decoder.mid_block.attentions.") for k in state):
        raise ValueError("only one of the encoder's and decoder's mid blocks has attention: not supported")
    n_embed, embed_dim = tensor_shape(state, CODEBOOK)
    quantizer = imported_vq(n_embed, embed_dim)
    return TokenizerConfig(
        in_channels=in_channels,
        out_channels=tensor_shape(state, "decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=len(_indices(state, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
        attn_resolutions=tuple(TAMING_RESOLUTION // 2**i for i in encoder_attention),
        resolution=TAMING_RESOLUTION,
        z_channels=tensor_shape(state, "quant_conv.weight")[1],
        dropout=0.0,
        mid_attention=mid_attention,
        norm_groups=norm_groups,
        quantizer=quantizer,
    )


def _attention(rest: str) -> str:
    for theirs, ours in ATTENTION_NAMES.items():
        if rest.startswith(theirs + "."):
            return ours + rest[len(theirs) :]
    return rest  # an unknown sub-layer keeps its name, so strict loading reports it


def _up(m: re.Match[str], levels: int) -> int:
    return levels - 1 - int(m[1])  # up_blocks[i] is taming's up level n-1-i


# (diffusers name pattern, our name of a match given the number of levels); the first match wins
RENAMES: list[tuple[re.Pattern[str], Callable[[re.Match[str], int], str]]] = [
    (re.compile(p), rename)
    for p, rename in (
        (
            r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)",
            lambda m, n: f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}",
        ),
        (r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", lambda m, n: f"{m[1]}.mid.attn_1.{_attention(m[2])}"),
        (r"(encoder|decoder)\.conv_norm_out\.(.*)", lambda m, n: f"{m[1]}.norm_out.{m[2]}"),
        (r"encoder\.down_blocks\.(\d+)\.resnets\.(.*)", lambda m, n: f"encoder.down.{m[1]}.block.{m[2]}"),
        (
            r"encoder\.down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda m, n: f"encoder.down.{m[1]}.attn.{m[2]}.{_attention(m[3])}",
        ),
        (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", lambda m, n: f"encoder.down.{m[1]}.downsample.{m[2]}"),
        (r"decoder\.up_blocks\.(\d+)\.resnets\.(.*)", lambda m, n: f"decoder.up.{_up(m, n)}.block.{m[2]}"),
        (
            r"decoder\.up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)",
            lambda m, n: f"decoder.up.{_up(m, n)}.attn.{m[2]}.{_attention(m[3])}",
        ),
        (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", lambda m, n: f"decoder.up.{_up(m, n)}.upsample.{m[2]}"),
    )
]


def _rename(name: str, levels: int) -> str:
    """Our name of one diffusers VQModel tensor (``levels``: the number of resolution levels); names without a
    rule (``conv_in``, ``conv_out``, ``quant_conv``, ...) are shared."""
    for pattern, rename in RENAMES:
        if m := pattern.fullmatch(name):
            name = rename(m, levels)
            break
    return name.replace(".conv_shortcut.", ".nin_shortcut.")


def to_taming_names(state: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """A diffusers VQModel state dict under taming's names (``quantize.embedding.weight`` kept, as taming has it);
    attention ``Linear`` weights ``[C, C]`` become 1x1 convolution weights ``[C, C, 1, 1]``."""
    out = {}
    for name, tensor in state.items():
        ours = _rename(name, levels)
        if ".attn" in ours and ours.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[ours] = tensor
    return out
