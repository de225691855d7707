"""LPIPS perceptual distance (Zhang et al. 2018, arXiv:1801.03924) on VGG16, loadable from stock weight files.

The network is laid out so that two files load into it unchanged:
- torchvision's VGG16 ImageNet weights (``vgg16-397923af.pth``): keys ``features.{0,2,5,...,28}.weight/bias``
  (the ``classifier.*`` keys are ignored);
- the ``lpips`` package's linear heads (``lpips/weights/v0.1/vgg.pth``): keys ``lin{0..4}.model.1.weight``.
There is no pretrained download and no silent random network: ``LPIPS`` is built from weights, from files
(``LPIPS.from_files``), or, for tests only, from a seeded random draw (``LPIPS.random_init``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch import nn

# The lpips package's input scaling: inputs in [-1, 1] are mapped to ImageNet-normalised pixels.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # the lpips package's eps in the channel unit-normalisation

# torchvision's vgg16 ``features`` up to relu5_3: channel counts, "M" for a 2x2 max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TAP_CHANNELS = (64, 128, 256, 512, 512)
MIN_SIZE = 16  # four 2x2 pools before relu5_3

WEIGHTS_HELP = (
    "LPIPS needs two weight files: (1) torchvision's VGG16 ImageNet weights, 'vgg16-397923af.pth' "
    "(https://download.pytorch.org/models/vgg16-397923af.pth, or on a machine with torchvision: "
    "torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), 'vgg16.pth')); "
    "(2) the lpips package's linear heads 'vgg.pth' (pip install lpips, file lpips/weights/v0.1/vgg.pth, "
    "or github.com/richzhang/PerceptualSimilarity). Set loss.vgg_path and loss.lin_path in the training config "
    "to them, or loss.perceptual_weight=0 to train without the perceptual loss."
)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers)


class _LinearHead(nn.Module):
    """The lpips package's ``NetLinLayer``: ``model.0`` is its dropout (an identity here, so LPIPS is
    deterministic whatever the mode), ``model.1`` the non-negative 1x1 conv ``[1, C, 1, 1]`` without bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def load_weight_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``torch.save``-d state dict (read with ``weights_only=True``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path!r} does not exist. {WEIGHTS_HELP}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path!r} is not a plain state dict loadable with weights_only=True: {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r} must hold a state dict (a mapping of names to tensors), got {type(state).__name__}")
    return dict(state)


def _check_keys(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    kept = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    misshaped = [
        f"{k}: file {tuple(kept[k].shape)}, expected {tuple(expected[k])}"
        for k in sorted(set(kept) & set(expected))
        if kept[k].shape != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if misshaped:
        problems.append(f"mis-shaped keys [{'; '.join(misshaped)}]")
    if problems:
        raise ValueError(f"LPIPS weights from {source}: " + ", ".join(problems))
    negative = [k for k, v in kept.items() if k.startswith("lin") and bool((v < 0).any())]
    if negative:
        raise ValueError(f"LPIPS weights from {source}: the linear heads must be non-negative, {negative} are not")


class LPIPS(nn.Module):
    """LPIPS distance on VGG16 with the lpips package's v0.1 linear heads.

    With ``s`` the scaling (``(x - shift) / scale``), ``F_l`` the VGG16 activations after relu1_2, relu2_2,
    relu3_3, relu4_3 and relu5_3 (``C_l`` channels, ``H_l x W_l`` positions), ``n(f) = f / (||f||_2 + 1e-10)``
    the unit-normalisation over channels at each position, and ``w_l >= 0`` the linear head of layer ``l``:

        LPIPS(x, y) = sum_l (1 / (H_l W_l)) * sum_{h,w} sum_c w_{l,c} * (n(F_l(s(x))) - n(F_l(s(y))))_{c,h,w}^2

    The module is frozen (no parameter requires grad) and always in eval mode (``train()`` keeps it in eval);
    gradients flow to the inputs. Build it with ``LPIPS.from_files`` (or from state dicts); ``LPIPS.random_init``
    is for tests only.

    Args:
        vgg_weights: torchvision ``vgg16`` state dict (``features.N.weight/bias``; ``classifier.*`` ignored).
        lin_weights: lpips linear heads (``lin{0..4}.model.1.weight``, shape ``[1, C_l, 1, 1]``, non-negative).
        vgg_source, lin_source: where the weights came from, named in errors.
    """

    def __init__(
        self,
        vgg_weights: Mapping[str, torch.Tensor],
        lin_weights: Mapping[str, torch.Tensor],
        *,
        vgg_source: str = "vgg_weights",
        lin_source: str = "lin_weights",
    ) -> None:
        super().__init__()
        with torch.device("meta"):  # every value is loaded below: skip the default initialisation
            self.features = _vgg16_features()
            for i, channels in enumerate(_TAP_CHANNELS):
                setattr(self, f"lin{i}", _LinearHead(channels))
        self.to_empty(device="cpu")
        shapes = {k: v.shape for k, v in self.state_dict().items()}
        _check_keys(
            vgg_weights, {k: s for k, s in shapes.items() if k.startswith("features.")}, vgg_source, ("classifier.",)
        )
        _check_keys(lin_weights, {k: s for k, s in shapes.items() if k.startswith("lin")}, lin_source)
        state = {k: v for k, v in vgg_weights.items() if k.startswith("features.")} | dict(lin_weights)
        self.load_state_dict(state, strict=True)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, vgg_path: str | os.PathLike[str], lin_path: str | os.PathLike[str]) -> LPIPS:
        """LPIPS from torchvision's VGG16 file and the lpips package's ``vgg.pth`` (``.pth`` or ``.safetensors``).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the missing,
        unexpected or mis-shaped keys for a file of the wrong layout.
        """
        vgg_source, lin_source = repr(os.fspath(vgg_path)), repr(os.fspath(lin_path))
        return cls(
            load_weight_file(vgg_path),
            load_weight_file(lin_path),
            vgg_source=f"vgg_path {vgg_source}",
            lin_source=f"lin_path {lin_source}",
        )

    @classmethod
    def random_init(cls, seed: int = 0) -> LPIPS:
        """FOR TESTS ONLY: LPIPS with seeded random weights (it measures nothing perceptual).

        Convolutions get He-normal weights (as torchvision initialises VGG) and N(0, 0.1) biases (non-zero, so
        the input scaling matters: a bias-free ReLU net is blind to a uniform rescaling), the heads non-negative
        uniform weights; the global random state is left untouched.
        """
        generator = torch.Generator().manual_seed(seed)
        vgg = {}
        with torch.device("meta"):
            layout = _vgg16_features()
        for name, module in layout.named_children():
            if isinstance(module, nn.Conv2d):
                weight = torch.empty(module.weight.shape)
                nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)
                vgg[f"features.{name}.weight"] = weight
                vgg[f"features.{name}.bias"] = 0.1 * torch.randn(module.bias.shape, generator=generator)
        lin = {
            f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) / c
            for i, c in enumerate(_TAP_CHANNELS)
        }
        return cls(vgg, lin, vgg_source=f"random_init(seed={seed})", lin_source=f"random_init(seed={seed})")

    def train(self, mode: bool = True) -> LPIPS:
        """LPIPS is a fixed metric: it stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS distance.

        Args:
            x, y: pixels in ``[-1, 1]``, both ``[B, 3, H, W]`` or both ``[B, 3, T, H, W]`` (a video: frames are
                folded into the batch and the distance is averaged over frames), with ``H, W >= 16``.

        Returns:
            ``[B]``: the distance of each sample (0 for identical inputs); the lpips package returns the same
            values shaped ``[B, 1, 1, 1]``.
        """
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.ndim not in (4, 5) or x.shape[1] != 3:
            raise ValueError(f"LPIPS takes [B, 3, H, W] or [B, 3, T, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS needs H and W >= {MIN_SIZE} (VGG16 pools 4 times), got {tuple(x.shape)}")
        batch = x.shape[0]
        if x.ndim == 5:
            x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))
        dtype = self.shift.dtype
        both = torch.cat([x, y]).to(dtype)
        h = (both - self.shift) / self.scale
        distance = h.new_zeros(x.shape[0])
        taps = iter(_TAPS)
        tap = next(taps)
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index != tap:
                continue
            feats = h / (h.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            fx, fy = feats.chunk(2)
            head = getattr(self, f"lin{_TAPS.index(tap)}")
            distance = distance + head((fx - fy).square()).mean(dim=(1, 2, 3))
            tap = next(taps, -1)
        return distance.view(batch, -1).mean(dim=1)


def build_perceptual(
    vgg_path: str | os.PathLike[str] | None, lin_path: str | os.PathLike[str] | None, weight: float
) -> LPIPS | None:
    """The LPIPS module a loss with ``perceptual_weight=weight`` needs: ``None`` when ``weight == 0``.

    Raises ``ValueError`` when ``weight < 0``, or when ``weight > 0`` and a path is not set, and
    ``FileNotFoundError`` when a file does not exist; the messages name the training config's keys
    (``loss.vgg_path``) and say where to get both files.
    """
    if weight < 0:
        raise ValueError(f"loss.perceptual_weight must be >= 0, got {weight}")
    if weight == 0:
        return None
    if vgg_path is None or lin_path is None:
        raise ValueError(
            f"loss.perceptual_weight={weight} > 0 but loss.vgg_path={vgg_path!r}, loss.lin_path={lin_path!r}: "
            f"no pretrained weights are ever downloaded. {WEIGHTS_HELP}"
        )
    for key, path in (("loss.vgg_path", vgg_path), ("loss.lin_path", lin_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{key}: weight file {os.fspath(path)!r} does not exist. {WEIGHTS_HELP}")
    return LPIPS.from_files(vgg_path, lin_path)
