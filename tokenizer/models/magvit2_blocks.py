"""The encoder and decoder of Open-MAGVIT2's image tokenizer (TencentARC Open-MAGVIT2 / SEED-Voken).

Luo et al. 2024, "Open-MAGVIT2: An Open-Source Project Toward Democratizing Auto-regressive Visual
Generation", arXiv:2409.04410, after MAGVIT-v2 (Yu et al. 2023, arXiv:2310.05737). Unlike taming's VQGAN
(``tokenizer.models.blocks``) there is no attention anywhere, the residual blocks' convolutions have no bias,
the encoder halves the resolution with strided convolutions, and the decoder conditions on the quantized code
through adaptive group norms and upsamples by depth-to-space.

Parameter names follow the project's ``improved_model.py`` (``Encoder``/``Decoder``), so its state dicts load
tensor for tensor: ``conv_in``, ``down.{i}.block.{j}``, ``down.{i}.downsample``, ``mid_block.{j}``,
``adaptive.{i}``, ``up.{i}.block.{j}``, ``up.{i}.upsample.conv1``, ``norm_out``, ``conv_out``.
Every group norm has 32 groups and eps 1e-6; ``swish(x) = x * sigmoid(x)``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

GROUPS = 32  # groups of every GroupNorm
EPS = 1e-6  # eps of every GroupNorm, and of the code statistics in AdaptiveGroupNorm


class Magvit2Architecture(Protocol):
    """What the encoder and decoder read from a config (``Magvit2Config``)."""

    in_channels: int
    out_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)``, written as the project writes it (so results agree bit for bit)."""
    return x * torch.sigmoid(x)


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=EPS, affine=affine)


class ResBlock(nn.Module):
    """``y = s(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))``.

    ``conv1``/``conv2`` are 3x3 convolutions without bias; ``s`` is the identity, or a 1x1 convolution without
    bias (``nin_shortcut``) when the channel count changes. No dropout.
    """

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.norm1 = group_norm(channels_in)
        self.norm2 = group_norm(channels_out)
        self.conv1 = nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1, bias=False)
        if channels_in != channels_out:
            self.nin_shortcut = nn.Conv2d(channels_in, channels_out, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return h + (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class AdaptiveGroupNorm(nn.Module):
    """Group norm whose scale and shift are predicted from the quantized code ``q [B, Z, h, w]``:

    ``AGN(x; q) = gamma(sigma(q))[:, :, None, None] * GN(x) + beta(mu(q))[:, :, None, None]``

    where ``GN`` is a group norm without affine parameters, ``mu(q)_z = (1/n) sum_p q_{z,p}`` and
    ``sigma(q)_z = sqrt((1/(n-1)) sum_p (q_{z,p} - mu(q)_z)^2 + eps)`` are per-channel statistics over the
    ``n = h*w`` code positions (the unbiased variance, as ``torch.var`` computes it), and ``gamma``, ``beta`` are
    affine maps ``R^Z -> R^C`` (``nn.Linear``). The statistics need ``n >= 2`` positions.
    """

    def __init__(self, z_channels: int, channels: int) -> None:
        super().__init__()
        self.gn = group_norm(channels, affine=False)
        self.gamma = nn.Linear(z_channels, channels)
        self.beta = nn.Linear(z_channels, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        flat = code.flatten(2)
        scale = self.gamma((flat.var(dim=-1) + EPS).sqrt())
        shift = self.beta(flat.mean(dim=-1))
        return scale[:, :, None, None] * self.gn(x) + shift[:, :, None, None]


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """Rearrange ``[B, s*s*C, H, W]`` into ``[B, C, s*H, s*W]`` (``s = block``), depth-column-row order:

    ``out[b, c, s*h + i, s*w + j] = x[b, (s*i + j)*C + c, h, w]``.

    ``torch.pixel_shuffle`` uses the other order, ``x[b, c*s*s + s*i + j, h, w]``; the two agree only for
    ``C = 1``.
    """
    batch, depth, height, width = x.shape
    if depth % (block * block):
        raise ValueError(f"depth_to_space: {depth} channels do not split into {block}x{block} blocks")
    channels = depth // (block * block)
    x = x.reshape(batch, block, block, channels, height, width)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(batch, channels, height * block, width * block)


class Upsampler(nn.Module):
    """Double the resolution: a 3x3 convolution (with bias) to ``4 C`` channels, then ``depth_to_space(., 2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4 * channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), 2)


class Level(nn.Module):
    """One resolution level: ``block`` (ResBlocks), then ``downsample`` or ``upsample`` where the level has one."""

    def __init__(self, widths: list[tuple[int, int]]) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(c_in, c_out) for c_in, c_out in widths)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            h = block(h)
        return h


def _widths(width_in: int, width_out: int, count: int) -> list[tuple[int, int]]:
    return [(width_in if j == 0 else width_out, width_out) for j in range(count)]


class Magvit2Encoder(nn.Module):
    """Pixels ``[B, in_channels, H, W]`` -> latents ``[B, z_channels, H/f, W/f]``, ``f = 2^(len(ch_mult) - 1)``.

    ``conv_in`` (3x3, no bias); per level ``i`` ``num_res_blocks`` ResBlocks to ``ch * ch_mult[i]`` channels,
    then (all levels but the last) a 3x3 convolution of stride 2, padding 1, with bias; ``num_res_blocks``
    middle ResBlocks; ``conv_out(swish(norm_out(h)))`` with a 1x1 ``conv_out`` (with bias).
    """

    def __init__(self, config: Magvit2Architecture) -> None:
        super().__init__()
        ch, mult, blocks = config.ch, config.ch_mult, config.num_res_blocks
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, padding=1, bias=False)
        self.down = nn.ModuleList()
        width = ch
        for i, m in enumerate(mult):
            level = Level(_widths(width, ch * m, blocks))
            width = ch * m
            if i != len(mult) - 1:
                level.downsample = nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1)
            self.down.append(level)
        self.mid_block = nn.ModuleList(ResBlock(width, width) for _ in range(blocks))
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, config.z_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid_block:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Magvit2Decoder(nn.Module):
    """Quantized codes ``q [B, z_channels, h, w]`` -> pixels ``[B, out_channels, h*f, w*f]``.

    ``h = conv_in(q)`` (3x3, with bias); ``num_res_blocks`` middle ResBlocks; then for each level ``i`` from the
    last to the first: ``h = adaptive[i](h; q)`` (``AdaptiveGroupNorm`` conditioned on the code itself), the
    level's ResBlocks to ``ch * ch_mult[i]`` channels and, for ``i > 0``, an ``Upsampler``; finally
    ``conv_out(swish(norm_out(h)))`` (3x3, with bias). The code grid needs at least two positions (the
    adaptive norms take a variance over them).
    """

    def __init__(self, config: Magvit2Architecture) -> None:
        super().__init__()
        ch, mult, blocks = config.ch, config.ch_mult, config.num_res_blocks
        width = ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, kernel_size=3, padding=1)
        self.mid_block = nn.ModuleList(ResBlock(width, width) for _ in range(blocks))
        adaptive: list[AdaptiveGroupNorm] = []
        levels: list[Level] = []
        for i in reversed(range(len(mult))):
            adaptive.insert(0, AdaptiveGroupNorm(config.z_channels, width))
            level = Level(_widths(width, ch * mult[i], blocks))
            width = ch * mult[i]
            if i != 0:
                level.upsample = Upsampler(width)
            levels.insert(0, level)
        self.adaptive = nn.ModuleList(adaptive)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, config.out_channels, kernel_size=3, padding=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        if code.shape[-2] * code.shape[-1] < 2:
            raise ValueError(
                f"the decoder's adaptive group norms take the variance over the code grid, which needs at least "
                f"2 positions; got a {code.shape[-2]}x{code.shape[-1]} grid (codes of shape {tuple(code.shape)})"
            )
        h = self.conv_in(code)
        for block in self.mid_block:
            h = block(h)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            h = level(self.adaptive[i](h, code))
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
