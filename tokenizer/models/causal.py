"""Causal 3-D layers for the video tokenizer (MAGVIT-v2 / Cosmos style), streamable over time.

Every temporal operation is a causal convolution: with kernel ``k_t``, stride ``s_t`` and the clip padded on
the past side by ``P = k_t - 1`` copies of its first frame, output ``y[p]`` exists for the input positions
``p`` that are multiples of ``s_t`` and reads ``x[p - P .. p]``. So

- frame ``p``'s output never depends on later frames (causality), and a clip of ``1 + 2m`` frames becomes
  ``1 + m`` at a stride-2 layer: the first frame is encoded on its own;
- a 1-frame clip sees only its frame in every tap, so the layer reduces to a 2-D convolution with the
  kernel summed over time. These layers accept images ``[B, C, H, W]`` and take that path: the same model
  tokenizes images and videos, and an image gives the tokens of a 1-frame video;
- a long video can be fed in consecutive windows: a ``CausalState`` the caller holds keeps, for each layer,
  the last ``P`` frames it saw and the absolute position reached, so windows of any length chain into
  exactly the outputs of one pass over the whole video, in memory bounded by the window. The state lives in
  that object, never in the layers: a forward call continues the stream of the state made active around it
  (``with state.active(): model.encoder(window)``) and is a plain one-shot pass otherwise, so an open,
  interrupted or interleaved stream cannot change any other call.

Normalisation (GroupNorm) and attention act on each frame separately, so they are causal too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttnBlock, Ops


@dataclass
class _Stream:
    cache: torch.Tensor | None = None  # the last P input frames (absolute positions seen - P .. seen - 1)
    seen: int = 0  # input frames consumed so far


class CausalState:
    """The carry of one video being streamed through ``module``: one ``_Stream`` per causal layer.

    The caller holds it for as long as the video lasts and makes it active around each forward call
    (``with state.active(): ...``); layers outside ``module`` are not carried. Activation is scoped with a
    ``ContextVar``, so it is per thread and ends with the ``with`` block; never keep a state active across a
    ``yield`` (the generator's caller would run inside it): activate it around each step instead.
    """

    def __init__(self, module: nn.Module) -> None:
        self._streams = {m: _Stream() for m in module.modules() if isinstance(m, (CausalConv3d, CausalUpsample))}

    def stream_of(self, layer: nn.Module) -> _Stream:
        """The carry of ``layer`` (a fresh, unrecorded one for layers this state does not cover)."""
        return self._streams.get(layer) or _Stream()

    @contextlib.contextmanager
    def active(self) -> Iterator[CausalState]:
        """Forward calls inside this block continue this state's video."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_ACTIVE: ContextVar[CausalState | None] = ContextVar("causal_state", default=None)


def _stream_of(layer: nn.Module) -> _Stream:
    """The active state's carry of ``layer``, or a fresh one (a one-shot pass) when no state is active."""
    state = _ACTIVE.get()
    return state.stream_of(layer) if state is not None else _Stream()


class CausalConv3d(nn.Module):
    """``Conv3d`` with causal temporal padding (first frame repeated), "same" spatial padding by default.

    Input ``[B, C, T, H, W]`` -> ``[B, C', ceil(T / s_t), H', W']`` (outside streaming), or an image
    ``[B, C, H, W]`` -> ``[B, C', H', W']`` through the time-summed kernel.
    """

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        kernel: int = 3,
        stride: tuple[int, int] = (1, 1),  # (time, space)
        spatial_padding: int | None = None,  # None: kernel // 2
        temporal_kernel: int | None = None,  # None: kernel
    ) -> None:
        super().__init__()
        kt = kernel if temporal_kernel is None else temporal_kernel
        self.conv = nn.Conv3d(channels_in, channels_out, (kt, kernel, kernel), stride=(stride[0], stride[1], stride[1]))
        self.temporal_stride, self.spatial_stride = stride
        self.spatial_padding = kernel // 2 if spatial_padding is None else spatial_padding
        self.past = kt - 1  # P: frames of context each output reads before its own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.spatial_padding
        if x.ndim == 4:
            return F.conv2d(x, self.conv.weight.sum(2), self.conv.bias, self.spatial_stride, pad)
        stream = _stream_of(self)
        length = x.shape[2]
        context = stream.cache if stream.cache is not None else x[:, :, :1].expand(-1, -1, self.past, -1, -1)
        full = torch.cat([context, x], dim=2) if self.past else x
        stride = self.temporal_stride
        first = -(-stream.seen // stride) * stride  # first output position at or after the new frames
        count = len(range(first, stream.seen + length, stride))
        stream.cache = full[:, :, full.shape[2] - self.past :] if self.past else None
        stream.seen += length
        if count == 0:
            k, s = self.conv.kernel_size[1], self.spatial_stride
            height, width = ((n + 2 * pad - k) // s + 1 for n in x.shape[3:])
            return x.new_empty(x.shape[0], self.conv.out_channels, 0, height, width)
        start = first - (stream.seen - length)
        window = full[:, :, start : start + self.past + (count - 1) * stride + 1]
        return self.conv(F.pad(window, (pad, pad, pad, pad)))


def per_frame(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D ``layer`` to every frame of ``[B, C, T, H, W]`` (frames folded into the batch); images pass."""
    if x.ndim != 5:
        return layer(x)
    b, c, t, h, w = x.shape
    out = layer(x.transpose(1, 2).reshape(b * t, c, h, w))
    return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame on its own (statistics never mix time steps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)


class FrameAttnBlock(AttnBlock):
    """Single-head spatial self-attention within each frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)


class CausalDownsample(nn.Module):
    """Halve H and W (zero-pad right/bottom, stride-2 3x3 conv, as the image model) and, when ``temporal``,
    time too: ``1 + 2m`` frames -> ``1 + m``."""

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2), spatial_padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class CausalUpsample(nn.Module):
    """Double H and W (nearest) and, when ``temporal``, time: the first frame stays one frame, every later
    frame becomes two (``1 + m`` -> ``1 + 2m``); then a causal 3x3x3 conv."""

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5 and self.temporal:
            stream = _stream_of(self)
            repeats = torch.full((x.shape[2],), 2, device=x.device)
            if stream.seen == 0 and x.shape[2] > 0:
                repeats[0] = 1
            stream.seen += x.shape[2]
            x = x.repeat_interleave(repeats, dim=2)
        if x.ndim == 5:
            b, c, t, h, w = x.shape
            x = F.interpolate(x.reshape(b, c * t, h, w), scale_factor=2.0, mode="nearest").reshape(
                b, c, t, 2 * h, 2 * w
            )
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


def causal_ops(temporal_downsamplings: int, norm_groups: int = 32) -> Ops:
    """Layers for a causal encoder/decoder whose first ``temporal_downsamplings`` downsamplings also halve
    time (mirrored by the decoder's last upsamplings); every GroupNorm has ``norm_groups`` groups."""
    return Ops(
        conv=lambda c_in, c_out: CausalConv3d(c_in, c_out, 3),
        pointwise=lambda c_in, c_out: CausalConv3d(c_in, c_out, 1),
        norm=lambda channels: FrameGroupNorm(norm_groups, channels, eps=1e-6, affine=True),
        attention=lambda channels: FrameAttnBlock(channels, norm_groups),
        downsample=lambda channels, level: CausalDownsample(channels, temporal=level < temporal_downsamplings),
        upsample=lambda channels, level: CausalUpsample(channels, temporal=level <= temporal_downsamplings),
    )


@contextlib.contextmanager
def streaming(module: nn.Module) -> Iterator[CausalState]:
    """Inside this block, successive forward calls on ``module`` continue one video: a fresh ``CausalState``
    is active for the block and dropped on exit. For straight-line code only; generators use
    ``CausalState.active`` around each step (see ``CausalState``)."""
    with CausalState(module).active() as state:
        yield state
