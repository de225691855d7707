"""Argument checks shared by the public kernel functions; every error names the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_float_tensor(name: str, value: object, ndim: int | None = None) -> torch.Tensor:
    """``value`` must be a floating tensor (fp16/bf16/fp32/fp64), of rank ``ndim`` when given."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float32, float16, bfloat16), got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if ndim == 2 and value.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel (D >= 1), got shape {tuple(value.shape)}")
    return value


def check_index_tensor(name: str, value: object, length: int) -> torch.Tensor:
    """``value`` must be a 1-D integer tensor of ``length`` entries."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
    if value.ndim != 1 or value.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(value.shape)}")
    return value


def check_same_device(**tensors: torch.Tensor) -> None:
    """All tensors must live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"tensors must be on one device: {listing}")


def check_levels(levels: object) -> tuple[int, ...]:
    """FSQ levels: a non-empty sequence of ints, each at least 2, whose product fits in int64."""
    if isinstance(levels, torch.Tensor):
        levels = levels.tolist()
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of ints, got {levels!r}")
    if not all(isinstance(lv, int) and not isinstance(lv, bool) for lv in levels):
        raise TypeError(f"levels must hold ints, got {levels!r}")
    if min(levels) < 2:
        raise ValueError(f"every entry of levels must be at least 2, got {list(levels)}")
    size = 1
    for lv in levels:
        size *= lv
    if size >= 2**62:
        raise ValueError(f"levels {list(levels)} describe {size} codes; the product must stay below 2**62")
    return tuple(levels)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
