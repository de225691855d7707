"""What the family modules share: reading tensor shapes off a state dict, and the quantizer of an imported codebook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from ...quantizers import VQConfig


def tensor_shape(state: Mapping[str, torch.Tensor], name: str) -> torch.Size:
    """The shape of ``state[name]``; a ``ValueError`` naming the tensor when the checkpoint lacks it."""
    if name not in state:
        raise ValueError(f"cannot infer the config: the checkpoint has no tensor {name!r}")
    return state[name].shape


def imported_vq(
    codebook_size: int,
    dim: int,
    *,
    metric: Literal["l2", "cosine"] = "l2",
    commitment_weight: float = 0.25,
    codebook_weight: float = 1.0,
) -> VQConfig:
    """The ``VQConfig`` of a codebook trained by another project: updated by gradients (as those projects train
    theirs, so fine-tuning continues the same way), with neither k-means initialisation nor dead-code restarts
    (the codebook is already trained). Its loss is ``commitment_weight * ||z - sg(e)||^2 +
    codebook_weight * ||sg(z) - e||^2``."""
    return VQConfig(
        codebook_size=codebook_size,
        dim=dim,
        metric=metric,
        update="grad",
        commitment_weight=commitment_weight,
        codebook_weight=codebook_weight,
        kmeans_init=False,
        dead_code_threshold=0.0,
    )
