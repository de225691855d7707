"""The 2-D VQGAN encoder and decoder (Esser et al. 2021, "Taming Transformers", arXiv:2012.09841).

Parameter names and numerics follow taming-transformers' ``taming/modules/diffusionmodules/model.py``
(``Encoder``/``Decoder`` with ``double_z=False``, no timestep embedding), so its checkpoints load
tensor for tensor: ``conv_in``, ``down.{i}.block.{j}``, ``down.{i}.attn.{j}``, ``down.{i}.downsample``,
``mid.block_1``, ``mid.attn_1``, ``mid.block_2``, ``up.{i}.block.{j}``, ``up.{i}.attn.{j}``,
``up.{i}.upsample``, ``norm_out``, ``conv_out``. Cosmos-Tokenizer's image networks use the same names and
two options of the config: ``patch_size`` folds pixel patches into channels before ``conv_in`` and unfolds
them after ``conv_out`` (``patching``), and ``num_resamples`` lets fewer levels change resolution (the
encoder's first levels halve it, the decoder's last levels, which run first, double it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .config import TokenizerConfig
from .patching import Patcher


def normalize(channels: int, groups: int = 32) -> nn.GroupNorm:
    """Taming's ``Normalize``: ``groups`` groups (taming: 32), eps 1e-6, affine."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def conv3x3(channels_in: int, channels_out: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=stride, padding=padding)


def conv1x1(channels_in: int, channels_out: int) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, kernel_size=1)


@dataclass(frozen=True)
class Ops:
    """The layers an encoder/decoder is built from; the causal video model swaps in 3-D ones
    (``tokenizer.models.causal``) and keeps every parameter name."""

    conv: Callable[[int, int], nn.Module]  # 3x3 "same" convolution, channels in -> out
    pointwise: Callable[[int, int], nn.Module]  # 1x1 convolution
    norm: Callable[[int], nn.Module]
    attention: Callable[[int], nn.Module]
    downsample: Callable[[int, int], nn.Module]  # (channels, level) -> halve the resolution after `level`
    upsample: Callable[[int, int], nn.Module]  # (channels, level) -> double the resolution into `level - 1`


class ResnetBlock(nn.Module):
    """``x + conv2(dropout(swish(norm2(conv1(swish(norm1(x)))))))``; a 1x1 ``nin_shortcut`` maps ``x``
    when the channel count changes."""

    def __init__(self, channels_in: int, channels_out: int, dropout: float = 0.0, ops: Ops | None = None) -> None:
        super().__init__()
        ops = ops or IMAGE_OPS
        self.norm1 = ops.norm(channels_in)
        self.conv1 = ops.conv(channels_in, channels_out)
        self.norm2 = ops.norm(channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = ops.conv(channels_out, channels_out)
        self.nin_shortcut = ops.pointwise(channels_in, channels_out) if channels_in != channels_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = F.silu(self.norm2(h))  # rebinding frees conv1's output before conv2 runs (one activation less)
        h = self.conv2(self.dropout(h))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H*W`` positions, ``softmax(q k^T / sqrt(C)) v``, with 1x1
    convolutions for ``q``, ``k``, ``v`` and ``proj_out`` and a residual connection. Memory is linear in
    ``H*W`` (query blocks, ``tokenizer.models.attention``)."""

    def __init__(self, channels: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm = normalize(channels, norm_groups)
        self.q = conv1x1(channels, channels)
        self.k = conv1x1(channels, channels)
        self.v = conv1x1(channels, channels)
        self.proj_out = conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, 1, H*W, C]
            return t.reshape(b, 1, c, h * w).transpose(-1, -2)

        out = attention(tokens(self.q(normed)), tokens(self.k(normed)), tokens(self.v(normed)))
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve the resolution: zero-pad right and bottom by one, then a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour interpolation, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (one AttnBlock after each block, or
    none) and, where the level changes resolution, ``downsample`` / ``upsample``."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, dropout: float, ops: Ops) -> None:
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(c_in, c_out, dropout, ops) for c_in, c_out in widths])
        self.attn = nn.ModuleList([ops.attention(c_out) for _, c_out in widths] if attention else [])

    def layers(self) -> Iterator[nn.Module]:
        """The level's modules in the order they run: each block (then its attention), resampling last.

        The encoder and decoder apply them one by one, ``h = layer(h)``, so each activation is freed as soon as
        the next exists (a ``forward`` called as ``h = level(h)`` would keep the level's input alive throughout).
        """
        for j, block in enumerate(self.block):
            yield block
            if len(self.attn) > 0:
                yield self.attn[j]
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                yield getattr(self, name)


class Middle(nn.Module):
    """``block_1 -> attn_1 -> block_2`` at the lowest resolution; without ``attention`` ``attn_1`` is the
    identity and holds no tensors (latent-diffusion's ``attn_type="none"``)."""

    def __init__(self, channels: int, dropout: float, ops: Ops, attention: bool = True) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, ops)
        self.attn_1 = ops.attention(channels) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, dropout, ops)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


def image_ops(norm_groups: int = 32) -> Ops:
    """The 2-D layers, every GroupNorm with ``norm_groups`` groups."""
    return Ops(
        conv=conv3x3,
        pointwise=conv1x1,
        norm=lambda channels: normalize(channels, norm_groups),
        attention=lambda channels: AttnBlock(channels, norm_groups),
        downsample=lambda channels, level: Downsample(channels),
        upsample=lambda channels, level: Upsample(channels),
    )


IMAGE_OPS = image_ops()


class Encoder(nn.Module):
    """Pixels ``[B, in_channels, H, W]`` -> latents ``[B, z_channels, H/f, W/f]``, ``f = downsample_factor``."""

    def __init__(self, config: TokenizerConfig, ops: Ops | None = None) -> None:
        super().__init__()
        ops = ops or image_ops(config.norm_groups)
        ch, mult, attention = config.ch, config.ch_mult, config.attention_levels
        self.patcher = Patcher(config.patch_size, config.patch_method)
        self.conv_in = ops.conv(config.in_channels * config.patch_size**2, ch)
        self.down = nn.ModuleList()
        width = ch
        for i, m in enumerate(mult):
            widths = [(width if j == 0 else ch * m, ch * m) for j in range(config.num_res_blocks)]
            level = Level(widths, i in attention, config.dropout, ops)
            width = ch * m
            if i < config.resamples:
                level.downsample = ops.downsample(width, i)
            self.down.append(level)
        self.mid = Middle(width, config.dropout, ops, config.mid_attention)
        self.norm_out = ops.norm(width)
        self.conv_out = ops.conv(width, config.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.patcher(x))
        for level in self.down:
            for layer in level.layers():
                h = layer(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents ``[B, z_channels, h, w]`` -> pixels ``[B, out_channels, h*f, w*f]``.

    ``up[i]`` is level ``i`` (``up[0]`` the full resolution); they run from the last level to the first.
    """

    def __init__(self, config: TokenizerConfig, ops: Ops | None = None) -> None:
        super().__init__()
        ops = ops or image_ops(config.norm_groups)
        ch, mult, attention = config.ch, config.ch_mult, config.attention_levels
        width = ch * mult[-1]
        self.conv_in = ops.conv(config.z_channels, width)
        self.mid = Middle(width, config.dropout, ops, config.mid_attention)
        levels: list[Level] = []
        for i in reversed(range(len(mult))):
            widths = [(width if j == 0 else ch * mult[i], ch * mult[i]) for j in range(config.num_res_blocks + 1)]
            level = Level(widths, i in attention, config.dropout, ops)
            width = ch * mult[i]
            if i >= len(mult) - config.resamples:
                level.upsample = ops.upsample(width, i)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = ops.norm(width)
        self.conv_out = ops.conv(width, config.out_channels * config.patch_size**2)
        self.unpatcher = Patcher(config.patch_size, config.patch_method, inverse=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            for layer in self.up[i].layers():
                h = layer(h)
        h = self.norm_out(h)  # rebound step by step: each full-resolution activation is freed once the next exists
        h = F.silu(h)
        return self.unpatcher(self.conv_out(h))
