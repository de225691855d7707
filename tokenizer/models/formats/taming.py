"""Reading taming-transformers and latent-diffusion VQ checkpoints (Lightning ``.ckpt`` or a bare state dict).

Three layouts share taming's encoder/decoder names (``encoder.*``, ``decoder.*``, ``quant_conv.*``,
``post_quant_conv.*``, ours too) and carry the training loss (LPIPS, discriminator) under ``loss.*``, which a
tokenizer does not need:

- taming's ``VQModel`` (``VectorQuantizer2``): the codebook ``quantize.embedding.weight [n_embed, embed_dim]``;
  ``k = argmin_k ||z - e_k||^2``.
- taming's ``GumbelVQ`` (``GumbelQuantize``, the f8 Gumbel model): logits ``quantize.proj`` (a 1x1 convolution
  ``embed_dim -> n_embed``) and codes ``quantize.embed.weight [n_embed, embed_dim]``; at inference
  ``k = argmax_k proj(z)_k`` (``quantizers.gumbel``).
- latent-diffusion's first-stage ``VQModel`` (``vq-f4``, ``vq-f4-noattn``, ``vq-f8``, ``vq-f8-n256``, ``vq-f16``):
  taming's ``VQModel`` layout; ``vq-f4-noattn`` (``attn_type="none"``) has no ``mid.attn_1`` tensors
  (``TokenizerConfig.mid_attention=False``). Its ``model_ema.*`` copy (``use_ema``) is training state and is
  dropped. A ``quantize.used`` remap table (``remap=``) renumbers the indices the peer reports; it is dropped
  with a warning: our indices then number the full codebook, and decode to the same images.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from ...quantizers import GumbelConfig, VQConfig
from ..config import TokenizerConfig
from ._common import imported_vq, tensor_shape
from .reading import Checkpoint

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

NAME = "taming"
DESCRIPTION = (
    "taming-transformers VQGAN (VQModel, GumbelVQ) and latent-diffusion's VQ first stages "
    "(Lightning .ckpt or a bare state dict)"
)

TAMING_CODEBOOK = "quantize.embedding.weight"
GUMBEL_CODES, GUMBEL_PROJ = "quantize.embed.weight", "quantize.proj.weight"
TAMING_RESOLUTION = 256  # the resolution attention levels are expressed against when inferring a config
TAMING_BETA = 0.25  # VectorQuantizer2's beta in taming's and latent-diffusion's VQModel
GUMBEL_KL_WEIGHT = 1e-8  # GumbelVQ's default kl_weight
TRAINING_PREFIXES = ("loss.", "model_ema.")  # LPIPS + discriminator; latent-diffusion's LitEma copy
REMAP_TABLE = "quantize.used"

# latent-diffusion's first-stage VQ configs: (downsample factor, embed_dim, n_embed, mid attention) -> name
LDM_VARIANTS = {
    (4, 3, 8192, True): "vq-f4",
    (4, 3, 8192, False): "vq-f4-noattn",
    (8, 4, 16384, True): "vq-f8",
    (8, 4, 256, True): "vq-f8-n256",
    (16, 8, 16384, True): "vq-f16",
}


def detect(checkpoint: Checkpoint) -> bool:
    """Taming's encoder/decoder names with a taming codebook (``VectorQuantizer2`` or ``GumbelQuantize``)."""
    return any(_is_taming(sd) for sd in checkpoint.state_dicts.values())


def _is_taming(state: Mapping[str, torch.Tensor]) -> bool:
    codebook = TAMING_CODEBOOK in state or (GUMBEL_CODES in state and GUMBEL_PROJ in state)
    return codebook and "encoder.conv_in.weight" in state and "encoder.down.0.block.0.conv1.weight" in state


def _is_gumbel(state: Mapping[str, torch.Tensor]) -> bool:
    return GUMBEL_PROJ in state and TAMING_CODEBOOK not in state


def state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The model's state dict in a checkpoint (Lightning's ``state_dict`` or a bare one), training state dropped.

    ``loss.*`` and ``model_ema.*`` go silently; a ``quantize.used`` remap table goes with a ``UserWarning``.
    """
    for sd in checkpoint.state_dicts.values():
        if _is_taming(sd):
            if REMAP_TABLE in sd:
                warnings.warn(
                    f"{str(checkpoint.source)!r} remaps its indices to the {sd[REMAP_TABLE].numel()} codes of "
                    f"{REMAP_TABLE!r}; the remap is not applied: token ids number the full codebook "
                    "(the decoded images are the same)",
                    stacklevel=3,
                )
            return {k: v for k, v in sd.items() if not k.startswith(TRAINING_PREFIXES) and k != REMAP_TABLE}
    raise ValueError(f"{str(checkpoint.source)!r} holds no taming VQModel state dict")


def load(checkpoint: Checkpoint, config: TokenizerConfig) -> Tokenizer:
    """The ``Tokenizer`` of a taming / latent-diffusion checkpoint, eval mode, CPU."""
    from ..tokenizer import Tokenizer

    state = state_dict(checkpoint)
    quantizer = GumbelConfig if _is_gumbel(state) else VQConfig
    if not isinstance(config, TokenizerConfig) or not isinstance(config.quantizer, quantizer):
        raise TypeError(
            f"{str(checkpoint.source)!r} holds a {'Gumbel' if quantizer is GumbelConfig else 'VQ'} codebook: config "
            f"must be a TokenizerConfig with a {quantizer.__name__}"
        )
    model = Tokenizer(config)
    model._load_checked(to_tokenizer_state(state, model.state_dict()), str(checkpoint.source))
    return model.eval()


def infer_config(checkpoint: Checkpoint | Mapping[str, torch.Tensor]) -> TokenizerConfig:
    """The ``TokenizerConfig`` of a taming / latent-diffusion checkpoint (or its state dict), from tensor shapes.

    Attention levels are expressed as ``attn_resolutions`` against ``resolution=256``; ``mid_attention`` is
    whether ``encoder.mid.attn_1`` exists. The quantizer keeps the peer's training objective for fine-tuning:

    - VQ: a gradient-trained l2 ``VQConfig`` with taming's legacy loss ``||sg(e) - z||^2 + beta ||e - sg(z)||^2``
      (``VectorQuantizer2(legacy=True)``, beta 0.25 on the codebook term: ``commitment_weight=1``,
      ``codebook_weight=0.25``), no k-means initialisation and no dead-code restarts;
    - Gumbel: a ``GumbelConfig`` with GumbelVQ's ``kl_weight=1e-8`` and temperature 1.
    """
    state = state_dict(checkpoint) if isinstance(checkpoint, Checkpoint) else checkpoint
    ch, in_channels = tensor_shape(state, "encoder.conv_in.weight")[:2]
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if levels != list(range(len(levels))) or not levels:
        raise ValueError(f"cannot infer the config: encoder levels {levels} are not 0..n-1")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    ch_mult = []
    for i in levels:
        width = tensor_shape(state, f"encoder.down.{i}.block.0.conv1.weight")[0]
        if width % ch:
            raise ValueError(f"cannot infer the config: level {i} has {width} channels, not a multiple of ch={ch}")
        ch_mult.append(width // ch)
    attention = [i for i in levels if any(k.startswith(f"encoder.down.{i}.attn.") for k in state)]
    embed_dim, z_channels = tensor_shape(state, "quant_conv.weight")[:2]
    if _is_gumbel(state):
        n_embed, proj_in = tensor_shape(state, GUMBEL_PROJ)[:2]
        if proj_in != embed_dim or tensor_shape(state, GUMBEL_CODES) != (n_embed, embed_dim):
            raise ValueError(
                f"cannot infer the config: GumbelVQ's quantize.proj takes {proj_in} channels and quantize.embed is "
                f"{tuple(tensor_shape(state, GUMBEL_CODES))}, but quant_conv gives {embed_dim} (they must agree)"
            )
        quantizer = GumbelConfig(codebook_size=n_embed, dim=embed_dim, kl_weight=GUMBEL_KL_WEIGHT)
    else:
        n_embed, embed_dim = tensor_shape(state, TAMING_CODEBOOK)
        quantizer = imported_vq(n_embed, embed_dim, commitment_weight=1.0, codebook_weight=TAMING_BETA)
    return TokenizerConfig(
        in_channels=in_channels,
        out_channels=tensor_shape(state, "decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=len(blocks),
        attn_resolutions=tuple(TAMING_RESOLUTION // 2**i for i in attention),
        resolution=TAMING_RESOLUTION,
        z_channels=z_channels,
        dropout=0.0,
        quantizer=quantizer,
        mid_attention="encoder.mid.attn_1.q.weight" in state,
    )


def describe(checkpoint: Checkpoint) -> str:
    """One line naming the variant: taming VQ / Gumbel, the factor, the codebook, and the latent-diffusion
    config whose shapes it matches, if any."""
    config = infer_config(checkpoint)
    q, f = config.quantizer, config.downsample_factor
    if isinstance(q, GumbelConfig):
        return f"taming-transformers GumbelVQ (f{f}, {q.codebook_size} codes of dim {q.dim})"
    line = f"taming-transformers / latent-diffusion VQModel (f{f}, {q.codebook_size} codes of dim {q.dim}"
    line += "" if config.mid_attention else ", no middle attention"
    ldm = LDM_VARIANTS.get((f, q.dim, q.codebook_size, config.mid_attention))
    return line + (f"; the shapes of latent-diffusion's {ldm})" if ldm else ")")


def to_tokenizer_state(
    state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename a taming state dict to a ``Tokenizer``'s (``model_state``).

    VQ: the codebook becomes ``quantize.codebook``; the quantizer's bookkeeping buffers are filled in as for a
    trained codebook (uniform ``cluster_size``, ``embed_sum = codebook * cluster_size``, ``initialized``).
    Gumbel: the 1x1 convolution ``quantize.proj.weight [K, D, 1, 1]`` becomes a linear ``[K, D]``.
    """
    out = {("quantize.codebook" if k == TAMING_CODEBOOK else k): v for k, v in state.items()}
    proj = out.get(GUMBEL_PROJ)
    if proj is not None and proj.ndim == 4 and proj.shape[2:] == (1, 1):
        out[GUMBEL_PROJ] = proj.flatten(1)
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
