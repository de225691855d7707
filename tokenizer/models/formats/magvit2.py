"""Reading Open-MAGVIT2 / SEED-Voken LFQ tokenizer checkpoints (TencentARC; ``lfqgan.VQModel``, Lightning).

The Lightning ``.ckpt``'s ``state_dict`` holds the live weights under ``encoder.*`` / ``decoder.*`` (our
``Magvit2Tokenizer`` names), the training loss under ``loss.*``, and, for models trained with ``use_ema``, the
EMA copy of every trainable parameter from ``LitEma``: a buffer ``model_ema.<name with the dots removed>``
(``encoder.conv_in.weight`` -> ``model_ema.encoderconv_inweight``) plus ``model_ema.decay`` and
``model_ema.num_updates``. The project evaluates and reconstructs with the EMA weights when it has them
(``ema_scope``), so ``load`` does too; a checkpoint without them loads its live weights. The LFQ quantizer has
no tensors: ``z_channels`` bits per token, ``index = sum_i [z_i > 0] 2^i``, which is our ``LFQ``'s order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ...quantizers import LFQConfig
from ..magvit2 import Magvit2Config, Magvit2Tokenizer
from .reading import Checkpoint

NAME = "magvit2"
DESCRIPTION = "Open-MAGVIT2 / SEED-Voken LFQ image tokenizer (lfqgan VQModel; EMA weights model_ema.* when present)"

EMA_PREFIX = "model_ema."
BODIES = ("encoder.", "decoder.")
# tensors only this family has: middle ResBlocks as a list, and the decoder's adaptive group norms
SIGNATURE = ("encoder.conv_in.weight", "encoder.mid_block.0.conv1.weight", "decoder.adaptive.0.gamma.weight")


def ema_name(name: str) -> str:
    """The name ``LitEma`` stores the EMA copy of parameter ``name`` under, in the Lightning state dict."""
    return EMA_PREFIX + name.replace(".", "")


def _tensor(state: Mapping[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """Parameter ``name``, live or (when only that is stored) its EMA copy."""
    return state[name] if name in state else state.get(ema_name(name))


def _is_magvit2(state: Mapping[str, torch.Tensor]) -> bool:
    found = [_tensor(state, name) for name in SIGNATURE]
    if any(t is None for t in found) or found[0].ndim != 4:  # the video tokenizer's convolutions are 3-D
        return False
    # a codebook (IBQ, the same bodies with an index-backpropagation VQ) is another family
    return not any(k.startswith(("quantize.", EMA_PREFIX + "quantize")) for k in state)


def detect(checkpoint: Checkpoint) -> bool:
    """Open-MAGVIT2's encoder/decoder (``mid_block``, ``adaptive``) with no quantizer tensors."""
    return any(_is_magvit2(sd) for sd in checkpoint.state_dicts.values())


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The Open-MAGVIT2 state dict of a checkpoint (Lightning's ``state_dict`` or a bare one)."""
    for sd in checkpoint.state_dicts.values():
        if _is_magvit2(sd):
            return sd
    raise ValueError(
        f"{str(checkpoint.source)!r} holds no Open-MAGVIT2 state dict (encoder.mid_block, decoder.adaptive)"
    )


def _shape(state: Mapping[str, torch.Tensor], name: str) -> torch.Size:
    tensor = _tensor(state, name)
    if tensor is None:
        raise ValueError(f"cannot infer the config: the checkpoint has neither {name!r} nor {ema_name(name)!r}")
    return tensor.shape


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many consecutive ``i = 0, 1, ...`` have the tensor ``pattern.format(i)`` (live or EMA)."""
    count = 0
    while _tensor(state, pattern.format(count)) is not None:
        count += 1
    return count


def infer_config(checkpoint: Checkpoint | Mapping[str, torch.Tensor]) -> Magvit2Config:
    """The ``Magvit2Config`` of an Open-MAGVIT2 checkpoint (or its state dict), read off its tensor shapes:
    ``ch`` and ``in_channels`` from ``encoder.conv_in``, one level per ``encoder.down.{i}``, ``ch_mult`` from
    their widths, ``num_res_blocks`` from level 0, ``z_channels`` (= LFQ bits) from ``encoder.conv_out``."""
    state = state_dict(checkpoint) if isinstance(checkpoint, Checkpoint) else checkpoint
    ch, in_channels = _shape(state, "encoder.conv_in.weight")[:2]
    levels = _count(state, "encoder.down.{}.block.0.conv1.weight")
    blocks = _count(state, "encoder.down.0.block.{}.conv1.weight")
    if not levels or not blocks:
        raise ValueError("cannot infer the config: the checkpoint has no encoder.down.0.block.0 ResBlock")
    ch_mult = []
    for i in range(levels):
        width = _shape(state, f"encoder.down.{i}.block.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"cannot infer the config: level {i} has {width} channels, not a multiple of ch={ch}")
        ch_mult.append(width // ch)
    z_channels = _shape(state, "encoder.conv_out.weight")[0]
    return Magvit2Config(
        in_channels=in_channels,
        out_channels=_shape(state, "decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=blocks,
        z_channels=z_channels,
        quantizer=LFQConfig(dim=z_channels),
    )


def to_tokenizer_state(
    state: Mapping[str, torch.Tensor], names: list[str], *, use_ema: bool = True
) -> dict[str, torch.Tensor]:
    """The weights for a model with parameter ``names`` (``Magvit2Tokenizer`` = the project's names): the EMA
    copies when ``use_ema`` and the checkpoint has them, else the live ``encoder.*``/``decoder.*`` tensors.

    EMA tensors of the encoder/decoder that no name maps to keep their ``model_ema.*`` name, so a strict load
    reports them as unexpected.
    """
    squashed = {ema_name(name): name for name in names}
    if len(squashed) != len(names):  # two names that differ only in their dots: cannot happen for real configs
        raise ValueError("the model's parameter names are ambiguous once their dots are removed")
    ema_bodies = tuple(EMA_PREFIX + body.rstrip(".") for body in BODIES)
    ema = {k: v for k, v in state.items() if k.startswith(ema_bodies)}
    if use_ema and ema:
        return {squashed.get(k, k): v for k, v in ema.items()}
    return {k: v for k, v in state.items() if k.startswith(BODIES)}


def load(checkpoint: Checkpoint, config: Magvit2Config, *, use_ema: bool = True) -> Magvit2Tokenizer:
    """The ``Magvit2Tokenizer`` of an Open-MAGVIT2 checkpoint, eval mode, CPU: the EMA weights when the
    checkpoint has them and ``use_ema`` (as the project's evaluation), else the live ones."""
    if not isinstance(config, Magvit2Config):
        raise TypeError(f"an Open-MAGVIT2 checkpoint loads into a Magvit2Config model, got {type(config).__name__}")
    model = Magvit2Tokenizer(config)
    names = list(model.state_dict())
    state = to_tokenizer_state(state_dict(checkpoint), names, use_ema=use_ema)
    model._load_checked(state, str(checkpoint.source))
    return model.eval()
