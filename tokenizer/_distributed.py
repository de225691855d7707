"""The few torch.distributed collectives the library needs; each is a no-op in a single process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all processes, in place."""
    if is_distributed():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` with rank ``src``'s copy, in place; returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (any picklable object) on every rank; ``value`` itself in one process."""
    if is_distributed():
        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return value


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` in one process."""
    if is_distributed():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered
    return [value]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_environment() -> tuple[int, int, int]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1; NCCL with CUDA, else gloo), unless
    one is already initialised. Returns ``(world size, rank, local rank)``; ``(1, 0, 0)`` for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    return 1, 0, 0


def default_device(local_rank: int) -> torch.device:
    """This process's GPU (by local rank) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
