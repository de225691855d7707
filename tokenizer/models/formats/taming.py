"""Reading taming-transformers VQGAN checkpoints (``VQModel`` trained with PyTorch Lightning).

A taming state dict holds ``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*`` under our
names, the codebook as ``quantize.embedding.weight [n_embed, embed_dim]``, and the training loss
(LPIPS, discriminator) under ``loss.*``, which a tokenizer does not need.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..quantizers import VQConfig
from .config import TokenizerConfig

TAMING_CODEBOOK = "quantize.embedding.weight"
TAMING_RESOLUTION = 256  # the resolution attention levels are expressed against when inferring a config


def load_state_dict(path: str | os.PathLike[str], *, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a Lightning ``.ckpt`` (its ``"state_dict"``) or of a bare state dict, ``loss.*`` dropped.

    Loads with ``weights_only=True`` unless ``trust_checkpoint``: unpickling arbitrary objects runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no taming checkpoint at {str(path)!r}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_checkpoint:
            raise pickle.UnpicklingError(
                f"{str(path)!r} holds pickled Python objects besides tensors (Lightning often stores "
                "hyper-parameters or callback state that way), and unpickling them can run arbitrary code, so "
                "it was not loaded. If you trust where the file comes from, pass trust_checkpoint=True to load "
                f"it with torch.load(weights_only=False). Loader message: {error}"
            ) from error
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"] if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint else checkpoint
    if not isinstance(state, Mapping):
        raise TypeError(f"{str(path)!r} holds neither a state dict nor a dict with a 'state_dict' entry")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"the state dict in {str(path)!r} has entries that are not named tensors: {bad[:20]}")
    return {k: v for k, v in state.items() if not k.startswith("loss.")}


def _shape(state: Mapping[str, torch.Tensor], name: str) -> torch.Size:
    if name not in state:
        raise ValueError(f"cannot infer the config: the checkpoint has no tensor {name!r}")
    return state[name].shape


def infer_config(state: Mapping[str, torch.Tensor]) -> TokenizerConfig:
    """The ``TokenizerConfig`` of a taming VQGAN state dict, read off its tensor shapes.

    Attention levels are expressed as ``attn_resolutions`` against ``resolution=256``; the quantizer is a
    gradient-trained l2 ``VQConfig`` (taming's ``VectorQuantizer`` with beta 0.25) with no k-means
    initialisation and no dead-code restarts.
    """
    ch, in_channels = _shape(state, "encoder.conv_in.weight")[:2]
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if levels != list(range(len(levels))) or not levels:
        raise ValueError(f"cannot infer the config: encoder levels {levels} are not 0..n-1")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    ch_mult = []
    for i in levels:
        width = _shape(state, f"encoder.down.{i}.block.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"cannot infer the config: level {i} has {width} channels, not a multiple of ch={ch}")
        ch_mult.append(width // ch)
    attention = [i for i in levels if any(k.startswith(f"encoder.down.{i}.attn.") for k in state)]
    n_embed, embed_dim = _shape(state, TAMING_CODEBOOK)
    quantizer = VQConfig(
        codebook_size=n_embed,
        dim=embed_dim,
        metric="l2",
        update="grad",
        commitment_weight=0.25,
        kmeans_init=False,
        dead_code_threshold=0.0,
    )
    return TokenizerConfig(
        in_channels=in_channels,
        out_channels=_shape(state, "decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=len(blocks),
        attn_resolutions=tuple(TAMING_RESOLUTION // 2**i for i in attention),
        resolution=TAMING_RESOLUTION,
        z_channels=_shape(state, "quant_conv.weight")[1],
        dropout=0.0,
        quantizer=quantizer,
    )


def to_tokenizer_state(
    state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a taming state dict to a ``Tokenizer``'s (``model_state``): the codebook becomes
    ``quantize.codebook``; the quantizer's bookkeeping buffers are filled in as for a trained codebook
    (uniform ``cluster_size``, ``embed_sum = codebook * cluster_size``, ``initialized = True``)."""
    out = {("quantize.codebook" if k == TAMING_CODEBOOK else k): v for k, v in state.items()}
    codebook = out.get("quantize.codebook")
    if "quantize.cluster_size" in model_state and "quantize.cluster_size" not in out:
        out["quantize.cluster_size"] = torch.ones_like(model_state["quantize.cluster_size"])
    if "quantize.initialized" in model_state and "quantize.initialized" not in out:
        out["quantize.initialized"] = torch.tensor(True)
    counts = out.get("quantize.cluster_size")
    fill_sum = "quantize.embed_sum" in model_state and "quantize.embed_sum" not in out
    if fill_sum and codebook is not None and counts is not None and counts.shape[0] == codebook.shape[0]:
        out["quantize.embed_sum"] = codebook.float() * counts[:, None].float()
    return out
