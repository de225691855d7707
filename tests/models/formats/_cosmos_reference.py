"""An independent functional re-implementation of Cosmos-Tokenizer's discrete image tokenizer (DI), for tests.

Written from reading NVIDIA/Cosmos-Tokenizer (``modules/layers2d.py``, ``modules/patching.py``,
``modules/quantizers.py``, ``networks/discrete_image.py``), not copied from it: the modules below keep Cosmos'
attribute names (so traced archives carry Cosmos' tensor names) and its numerics, in code of our own.

- Haar patcher: ``log2(patch_size)`` rounds of a 2-tap filter bank (low ``[s, s]``, high ``[s, -s]``,
  ``s = 1/sqrt(2)``) along W then H with stride 2, sub-bands concatenated ``[LL, LH, HL, HH]`` and halved;
  the unpatcher is the transposed filter bank, doubled.
- Encoder: ``conv_in`` on the ``3 * p^2`` sub-band channels; level ``i`` has ``num_res_blocks`` ResNet blocks
  (GroupNorm(32, eps 1e-6), swish) and downsamples (pad right/bottom by one, stride-2 3x3 conv) only while
  ``i < log2(spatial_compression) - log2(p)``; then mid (block, attention, block), norm, swish, ``conv_out``.
- Decoder: ``conv_in``, mid, levels from the last to the first with ``num_res_blocks + 1`` blocks; level ``i``
  upsamples (repeat every pixel 2x2, 3x3 conv) when ``i >= levels - num_upsamples``; norm, swish, ``conv_out``
  to ``3 * p^2`` channels, unpatcher.
- FSQ (no projections): ``tanh(z + atanh(offset / half)) * half - offset``, rounded, divided by ``L // 2``;
  index ``sum_i (q_i + L_i // 2) * prod_{j<i} L_j``.
- Archives: ``encoder.jit`` wraps ``Sequential(encoder, quant_conv, quantizer)`` and returns
  ``(indices, codes, loss)``; ``decoder.jit`` wraps ``Sequential(inv_quant, post_quant_conv, decoder)`` and maps
  indices to pixels; ``autoencoder.jit`` the whole ``DiscreteImageTokenizer``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

S = 0.7071067811865476  # 1/sqrt(2), the Haar filter tap


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class RefPatcher(nn.Module):
    """Cosmos' ``Patcher`` (haar): repeated one-level 2-D DWT with the filter bank as grouped convolutions."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.rounds = int(math.log2(patch_size))
        self.register_buffer("wavelets", torch.tensor([S, S]), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.rounds):
            g = x.shape[1]
            low = self.wavelets.flip(0).reshape(1, 1, 1, 2).repeat(g, 1, 1, 1)
            high = (self.wavelets * (-1) ** self._arange).reshape(1, 1, 1, 2).repeat(g, 1, 1, 1)
            x = F.pad(x, (0, 1, 0, 1), mode="reflect")
            along_w = [F.conv2d(x, k, groups=g, stride=(1, 2)) for k in (low, high)]
            bands = [F.conv2d(t, k.transpose(2, 3), groups=g, stride=(2, 1)) for t in along_w for k in (low, high)]
            x = torch.cat(bands, dim=1) / 2
        return x


class RefUnPatcher(nn.Module):
    """Cosmos' ``UnPatcher`` (haar): the transposed filter bank, doubled, per round."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.rounds = int(math.log2(patch_size))
        self.register_buffer("wavelets", torch.tensor([S, S]), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.rounds):
            g = x.shape[1] // 4
            low = self.wavelets.flip(0).reshape(1, 1, 2, 1).repeat(g, 1, 1, 1)  # taps along H
            high = (self.wavelets * (-1) ** self._arange).reshape(1, 1, 2, 1).repeat(g, 1, 1, 1)
            ll, lh, hl, hh = torch.chunk(x, 4, dim=1)
            rows_low, rows_high = _synthesis(ll, lh, low, high, (2, 1)), _synthesis(hl, hh, low, high, (2, 1))
            x = _synthesis(rows_low, rows_high, low.transpose(2, 3), high.transpose(2, 3), (1, 2)) * 2
        return x


def _synthesis(lo: torch.Tensor, hi: torch.Tensor, low: torch.Tensor, high: torch.Tensor, stride) -> torch.Tensor:
    """One synthesis step: the low and high bands through the transposed taps, summed."""
    g = lo.shape[1]
    return F.conv_transpose2d(lo, low, groups=g, stride=stride) + F.conv_transpose2d(hi, high, groups=g, stride=stride)


class RefResnet(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(0.0)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        return self.nin_shortcut(x) + h


class RefAttn(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, h * w) for m in (self.q, self.k, self.v))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c**-0.5, dim=2)  # [b, query, key]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class RefDownsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class RefUpsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def _mid(c: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = RefResnet(c, c), RefAttn(c), RefResnet(c, c)
    return mid


def _run_mid(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class RefEncoder(nn.Module):
    """Attention after each block of the levels whose working resolution (``resolution / p`` halved by the
    downsamplings so far) is in ``attn_resolutions``."""

    def __init__(
        self, channels, channels_mult, num_res_blocks, attn_resolutions, resolution, z_channels, patch_size, compression
    ):
        super().__init__()
        self.patcher = RefPatcher(patch_size)
        self.resamples = int(math.log2(compression)) - int(math.log2(patch_size))
        self.conv_in = nn.Conv2d(3 * patch_size**2, channels, 3, padding=1)
        self.down = nn.ModuleList()
        c, res = channels, resolution // patch_size
        for i, m in enumerate(channels_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(RefResnet(c, channels * m))
                c = channels * m
                if res in attn_resolutions:
                    level.attn.append(RefAttn(c))
            if i < self.resamples:
                level.downsample = RefDownsample(c)
                res //= 2
            self.down.append(level)
        self.mid = _mid(c)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.patcher(x))
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i < self.resamples:
                h = level.downsample(h)
        return self.conv_out(_swish(self.norm_out(_run_mid(self.mid, h))))


class RefDecoder(nn.Module):
    """Cosmos' decoder tracks its working resolution from ``resolution / p / 2^(levels - 1)`` upwards, doubling
    at each upsampling, so with fewer upsamplings than levels it attends at other levels than the encoder."""

    def __init__(
        self, channels, channels_mult, num_res_blocks, attn_resolutions, resolution, z_channels, patch_size, compression
    ):
        super().__init__()
        n = len(channels_mult)
        self.unpatcher = RefUnPatcher(patch_size)
        self.first_upsampling = n - (int(math.log2(compression)) - int(math.log2(patch_size)))
        c, res = channels * channels_mult[-1], resolution // patch_size // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = _mid(c)
        levels = []
        for i in reversed(range(n)):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.block.append(RefResnet(c, channels * channels_mult[i]))
                c = channels * channels_mult[i]
                if res in attn_resolutions:
                    level.attn.append(RefAttn(c))
            if i >= self.first_upsampling:
                level.upsample = RefUpsample(c)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 3 * patch_size**2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_mid(self.mid, self.conv_in(z))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i >= self.first_upsampling:
                h = level.upsample(h)
        return self.unpatcher(self.conv_out(_swish(self.norm_out(h))))


class RefFSQ(nn.Module):
    """Cosmos' ``FSQuantizer`` without projections: ``forward(z [B, d, h, w]) -> (indices, codes, loss)``."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0, dtype=torch.int32)
        self.register_buffer("_basis", basis, persistent=False)
        codebook = self.indices_to_codes(torch.arange(math.prod(levels)))
        self.register_buffer("implicit_codebook", codebook, persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z.permute(0, 2, 3, 1)
        half = (self._levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z + torch.atanh(offset / half)) * half - offset
        width = self._levels // 2
        codes = torch.round(bounded) / width
        indices = ((codes * width + width).float() * self._basis).sum(dim=-1).to(torch.int32)
        return indices, codes.permute(0, 3, 1, 2), torch.zeros(z.shape[0], 1, 1, 1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        digits = (indices[..., None] // self._basis) % self._levels
        width = self._levels // 2
        codes = (digits - width) / width
        return codes.permute(0, 3, 1, 2) if indices.ndim >= 3 else codes


class RefInvQuant(nn.Module):
    def __init__(self, quantizer: RefFSQ) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.indices_to_codes(indices)


class RefDiscreteImageTokenizer(nn.Module):
    """Cosmos' ``DiscreteImageTokenizer`` with an FSQ quantizer; ``forward`` returns the reconstruction."""

    def __init__(
        self,
        *,
        channels: int,
        channels_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        levels: tuple[int, ...],
        patch_size: int,
        spatial_compression: int,
        attn_resolutions: tuple[int, ...] = (),
        resolution: int = 64,
    ) -> None:
        super().__init__()
        args = (
            channels,
            channels_mult,
            num_res_blocks,
            attn_resolutions,
            resolution,
            z_channels,
            patch_size,
            spatial_compression,
        )
        self.encoder = RefEncoder(*args)
        self.decoder = RefDecoder(*args)
        self.quant_conv = nn.Conv2d(z_channels, len(levels), 1)
        self.post_quant_conv = nn.Conv2d(len(levels), z_channels, 1)
        self.quantizer = RefFSQ(levels)

    def encoder_jit(self) -> nn.Sequential:
        parts = [("encoder", self.encoder), ("quant_conv", self.quant_conv), ("quantizer", self.quantizer)]
        return nn.Sequential(OrderedDict(parts))

    def decoder_jit(self) -> nn.Sequential:
        parts = [
            ("inv_quant", RefInvQuant(self.quantizer)),
            ("post_quant_conv", self.post_quant_conv),
            ("decoder", self.decoder),
        ]
        return nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, codes, _ = self.quantizer(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(codes))


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights of sensible scale (convs ~ 1/sqrt(fan_in), norms near identity), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:  # GroupNorm weight
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
    return model.eval()
