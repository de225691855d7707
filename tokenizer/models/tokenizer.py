"""``Tokenizer``: a 2-D VQGAN image tokenizer, ``save_pretrained`` / ``from_pretrained``, taming import."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .._atomic import atomic_target
from ..assets import MODELS_DIR
from ..quantizers import QuantizerOutput, ResidualConfig, build_quantizer
from ._state import check_state_dict
from .blocks import Decoder, Encoder, Ops, image_ops
from .config import TokenizerConfig

FORMAT = "tessera-tokenizer"  # the "format" tag of config.json
VERSION = 1  # the layout version of a saved tokenizer; readers refuse newer ones
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHIPPED_MODELS = ("default", "default-video")  # inside the package: tokenizer/assets/models/<name>


class Tokenizer(nn.Module):
    """Image tokenizer: encoder -> quant_conv -> quantize -> post_quant_conv -> decoder.

    Pixels are float ``[B, 3, H, W]`` in ``[-1, 1]`` (``in_channels`` / ``out_channels`` of the config in
    general); ``H`` and ``W`` must be multiples of ``downsample_factor`` (``f``), and the token grid is
    ``[B, H/f, W/f]`` (residual quantizers: ``[B, H/f, W/f, depth]``) of ids below ``codebook_size``.

    Modes matter as for any module: call ``.eval()`` for inference. In training mode dropout is active
    and a VQ codebook learns from every batch it sees (EMA updates, k-means init, dead-code restarts),
    also through ``encode``.
    """

    config_class: ClassVar[type[TokenizerConfig]] = TokenizerConfig
    model_kind: ClassVar[str] = "image"  # the "model" tag of config.json
    grid_ranks: ClassVar[tuple[int, ...]] = (2,)  # token grids it makes: [h, w] (the video model adds [t, h, w])

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        config = self.config_class() if config is None else config
        if type(config) is not self.config_class:
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        ops = self.layer_ops(config)
        self.encoder = Encoder(config, ops)
        self.quant_conv = ops.pointwise(config.z_channels, config.embed_dim)
        self.quantize = build_quantizer(config.quantizer)
        self.post_quant_conv = ops.pointwise(config.embed_dim, config.z_channels)
        self.decoder = Decoder(config, ops)
        if self.quantize.dim != config.embed_dim:  # a config bug, not a user error
            raise AssertionError(f"quantizer takes {self.quantize.dim} channels, config says {config.embed_dim}")

    @classmethod
    def layer_ops(cls, config: TokenizerConfig) -> Ops:
        """The layers the encoder and decoder are built from (2-D here; causal 3-D in the video model)."""
        return image_ops(config.norm_groups)

    # --- properties -------------------------------------------------------------------------------------

    @property
    def codebook_size(self) -> int:
        """The vocabulary: token ids lie in ``[0, codebook_size)``."""
        return self.quantize.codebook_size

    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side (8 or 16 for the usual configs)."""
        return self.config.downsample_factor

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight (``decoder.conv_out.weight``), for the VQGAN adaptive GAN weight."""
        return self.decoder.conv_out.weight

    # --- the model --------------------------------------------------------------------------------------

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        if not isinstance(pixels, torch.Tensor) or not pixels.dtype.is_floating_point:
            raise TypeError(f"pixels must be a floating tensor, got {getattr(pixels, 'dtype', type(pixels).__name__)}")
        channels, f = self.config.in_channels, self.downsample_factor
        layouts = {4: f"[B, {channels}, H, W]", 5: f"[B, {channels}, T, H, W]"}
        allowed = [layouts[2 + rank] for rank in self.grid_ranks]
        if pixels.ndim - 2 not in self.grid_ranks or pixels.shape[1] != channels:
            raise ValueError(f"pixels must be {' or '.join(allowed)}, got shape {tuple(pixels.shape)}")
        height, width = pixels.shape[-2:]
        if height == 0 or width == 0 or height % f or width % f:
            raise ValueError(
                f"pixels of shape {tuple(pixels.shape)}: height and width must be positive multiples of the "
                f"downsample factor {f}; pad or crop the images first"
            )

    def encode_to_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``[B, embed_dim, H/f, W/f]`` of pixels ``[B, 3, H, W]`` in ``[-1, 1]``.

        Differentiable; what the quantizer sees (``quant_conv(encoder(pixels))``).
        Raises ``ValueError`` when ``H`` or ``W`` is not a multiple of ``downsample_factor``.
        """
        self._check_pixels(pixels)
        return self.quant_conv(self.encoder(pixels))

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Token ids of pixels ``[B, 3, H, W]`` (float in ``[-1, 1]``).

        Returns int64 ``[B, H/f, W/f]`` (residual quantizers: ``[B, H/f, W/f, depth]``) with ids in
        ``[0, codebook_size)``, ``f = downsample_factor``. Raises ``ValueError`` when ``H`` or ``W`` is not
        a multiple of ``f`` (pad or crop first). Runs without gradients.
        """
        return self.quantize(self.encode_to_latents(pixels)).indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, h*f, w*f]`` (float, nominally ``[-1, 1]``, not clamped) for token ids ``[B, h, w]``
        (residual quantizers: ``[B, h, w, depth]``, where id -1 drops a depth), as ``encode`` returns."""
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices))}")
        residual = isinstance(self.config.quantizer, ResidualConfig)
        grids = {2: "[B, h, w", 3: "[B, t, h, w"}
        expected = " or ".join(grids[r] + (", depth]" if residual else "]") for r in self.grid_ranks)
        grid_rank = indices.ndim - 1 - int(residual)
        if grid_rank not in self.grid_ranks or (residual and indices.shape[-1] != self.config.quantizer.depth):
            raise ValueError(f"indices must be {expected}, got shape {tuple(indices.shape)}")
        lowest = -1 if residual else 0
        if indices.numel():
            low, high = (int(v) for v in torch.aminmax(indices))
            if low < lowest or high >= self.codebook_size:
                raise ValueError(f"indices must lie in [{lowest}, {self.codebook_size}), got values in [{low}, {high}]")
        return self.decode_codes(self.quantize.indices_to_codes(indices.long()))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, h*f, w*f]`` for quantized codes ``[B, embed_dim, h, w]`` (the quantizer's output
        space, e.g. ``QuantizerOutput.quantized`` or ``quantize.indices_to_codes``). Differentiable."""
        ranks = [2 + rank for rank in self.grid_ranks]
        if not isinstance(codes, torch.Tensor) or codes.ndim not in ranks or codes.shape[1] != self.config.embed_dim:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            layouts = {4: "h, w", 5: "t, h, w"}
            expected = " or ".join(f"[B, {self.config.embed_dim}, {layouts[r]}]" for r in ranks)
            raise ValueError(f"codes must be {expected}, got {shape}")
        dtype = next(self.post_quant_conv.parameters()).dtype
        return self.decoder(self.post_quant_conv(codes.to(dtype)))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """Reconstruct pixels ``[B, 3, H, W]`` in ``[-1, 1]``: returns ``(reconstruction [B, 3, H, W],
        QuantizerOutput)``; the quantizer output holds the token ids, its loss and usage metrics.
        Gradients reach the encoder through the straight-through estimator."""
        out = self.quantize(self.encode_to_latents(pixels))
        return self.decode_codes(out.quantized), out

    # --- saving and loading -----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str], *, weights_dtype: torch.dtype | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        ``weights_dtype`` (e.g. ``torch.float16``, which halves the file) stores the network's floating-point
        tensors in that dtype; the quantizer's codebook and statistics stay as they are (fp32), and loading
        casts everything back to the module's dtype. Each file is written under a temporary name and renamed
        into place, so a reader never sees a partial file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        if weights_dtype is not None:
            state = {
                k: v.to(weights_dtype) if v.is_floating_point() and not k.startswith("quantize.") else v
                for k, v in state.items()
            }
        metadata = {
            "format": "pt",
            "tokenizer_format": FORMAT,
            "version": str(VERSION),
            "config": json.dumps(config, sort_keys=True),
        }
        with atomic_target(directory / WEIGHTS_NAME) as tmp:
            safetensors.torch.save_file(state, str(tmp), metadata=metadata)
        with atomic_target(directory / CONFIG_NAME) as tmp:
            header = {"format": FORMAT, "version": VERSION, "model": self.model_kind}
            tmp.write_text(json.dumps({**header, **config}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> Tokenizer:
        """Load a tokenizer written by ``save_pretrained``, in eval mode on the CPU.

        Loading is strict: weights whose names or shapes differ from what the config builds raise a
        ``ValueError`` listing the tensors. A missing directory or file raises ``FileNotFoundError``.
        Both files are untrusted input: an invalid ``config.json``, or one that describes other tensors than
        ``model.safetensors`` holds, raises ``ValueError`` before any weight is allocated (see
        ``_check_weights_header``), so a config cannot make loading allocate more than the file holds.
        """
        directory = resolve_pretrained(name_or_path)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"no saved tokenizer at {str(directory)!r}: not a directory (shipped: {', '.join(SHIPPED_MODELS)})"
            )
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{str(path)!r} does not exist (save_pretrained writes it)")
        data = read_config_json(config_path)
        if data.pop("format", None) != FORMAT:
            raise ValueError(f"{str(config_path)!r} is not a {FORMAT} config (its 'format' is not {FORMAT!r})")
        version = data.pop("version", None)
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ValueError(f"{str(config_path)!r} has version {version!r}; this library reads up to {VERSION}")
        kind = data.pop("model", "image")
        if kind != cls.model_kind:
            raise ValueError(
                f"{str(directory)!r} holds a {kind} tokenizer, not a {cls.model_kind} one; "
                "tokenizer.load_tokenizer() loads either"
            )
        try:
            config = cls.config_class.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{str(config_path)!r} is not a valid {cls.model_kind} tokenizer config: {error}"
            ) from None
        cls._check_weights_header(config, weights_path)
        try:
            state = safetensors.torch.load_file(str(weights_path), device="cpu")
        except SafetensorError as error:
            raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file: {error}") from None
        model = cls(config)
        model._load_checked(state, str(weights_path))
        return model.eval()

    @classmethod
    def _check_weights_header(cls, config: TokenizerConfig, weights_path: Path) -> None:
        """Raise ``ValueError`` unless ``weights_path`` holds exactly the tensors (names and shapes) that ``config``
        builds, reading only the file's header and building the model on the meta device (no storage): a
        config that asks for a huge model (``ch=2048``, ``codebook_size=2**31 - 1``) fails here, cheaply.
        safetensors checks that the header's shapes match the file's length, so the model then loaded is no
        bigger than the file."""
        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                names = handle.keys()
                found = {name: torch.empty(handle.get_slice(name).get_shape(), device="meta") for name in names}
        except SafetensorError as error:
            raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file: {error}") from None
        with torch.device("meta"):
            skeleton = cls(config)
        check_state_dict(skeleton.state_dict(), found, str(weights_path))

    @classmethod
    def from_taming(
        cls,
        checkpoint_path: str | os.PathLike[str],
        *,
        config: TokenizerConfig | None = None,
    ) -> Tokenizer:
        """Import a taming-transformers VQGAN (``VQModel``, ``GumbelVQ``) or latent-diffusion VQ first-stage
        checkpoint, in eval mode on the CPU.

        ``checkpoint_path``: a Lightning ``.ckpt`` (a dict whose ``"state_dict"`` holds the weights) or a
        bare state dict; ``loss.*`` tensors (LPIPS, discriminator) are ignored. ``config``: None infers the
        architecture from the tensor shapes (see ``formats.taming.infer_config``); a given config must hold a
        ``VQConfig`` (``GumbelConfig`` for ``GumbelVQ``) and match the tensors exactly. The model then reproduces
        the peer's reconstruction, ``decoder(post_quant_conv(e[k]))`` with ``k = argmin_k ||h - e_k||^2``
        (Gumbel: ``k = argmax_k proj(h)_k``) for ``h = quant_conv(encoder(x))``.

        The file is read by ``formats.read_checkpoint``: ``torch.load(weights_only=True)``, else a restricted
        unpickler for checkpoints that also pickle other Python objects (Lightning hyper-parameters, callbacks):
        those become inert stand-ins, so nothing from the file is imported or run and no trust is needed.
        """
        from .formats import read_checkpoint, taming

        checkpoint = read_checkpoint(checkpoint_path)
        return taming.load(checkpoint, taming.infer_config(checkpoint) if config is None else config)

    def _load_checked(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        check_state_dict(self.state_dict(), state, source)
        self.load_state_dict(state, strict=True)


def read_config_json(path: Path) -> dict:
    """The JSON object in ``path`` (a model's ``config.json``); ``ValueError`` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict):  # a file's content: ValueError, like any other bad config
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")  # noqa: TRY004
    return data


def resolve_pretrained(name_or_path: str | os.PathLike[str]) -> Path:
    """The directory ``from_pretrained`` reads. The name of a model shipped inside the package
    (``SHIPPED_MODELS``) maps to its folder there, unless a local folder of that name holds a saved tokenizer;
    anything else is a path, returned as given."""
    path = Path(name_or_path)
    if str(name_or_path) not in SHIPPED_MODELS or (path / CONFIG_NAME).is_file():
        return path
    return shipped_model_dir(str(name_or_path))


def shipped_model_dir(name: str) -> Path:
    """The folder of the shipped model ``name`` inside the installed package; FileNotFoundError when the
    installation lacks it."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    shipped = MODELS_DIR / name
    if not (shipped / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"the shipped model {name!r} is missing from this installation ({shipped}); "
            "reinstall the package, or run tools/train_default.py --install in a source checkout"
        )
    return shipped
