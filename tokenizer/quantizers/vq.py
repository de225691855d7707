"""Vector quantization (van den Oord et al. 2017, "Neural Discrete Representation Learning").

Each latent ``z`` (after an optional projection to ``codebook_dim``) is replaced by its nearest code
``e_k``, ``k = argmin_k d(z, e_k)`` (``kernels.nearest_code``), with a straight-through gradient.

Codebook learning, ``update``:
- ``"ema"``: the codebook follows exponential moving averages of the latents assigned to each code
  (``kernels.codebook_stats`` + ``kernels.ema_apply_``); loss = ``commitment_weight * ||z - sg(e)||^2``.
- ``"grad"``: the codebook is a parameter; loss = ``codebook_weight * ||sg(z) - e||^2 +
  commitment_weight * ||z - sg(e)||^2``.

``metric="cosine"`` l2-normalises latents and codes (as in ViT-VQGAN / LlamaGen's low-dim codebooks).
The first training batch can initialise the codebook by k-means; codes whose share of the EMA counts
falls below ``dead_code_threshold`` times the uniform share are re-seeded from current latents.
Under torch.distributed, statistics are all-reduced and k-means seeds and re-seeded codes come from
the lowest rank whose batch holds finite latents (rank 0 unless its batch is all NaN/Inf), so every rank
holds the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

import kernels

from .. import _distributed
from .base import (
    Quantizer,
    QuantizerOutput,
    fp32,
    from_rows,
    projection,
    straight_through,
    to_rows,
    usage_metrics,
)

# k-means initialisation stops when a Lloyd step lowers the mean squared distance by less than this
# fraction: later steps move the codes by little and each costs a full N x K assignment.
KMEANS_TOL = 1e-2


@dataclass(frozen=True)
class VQConfig:
    codebook_size: int  # K, the vocabulary
    dim: int  # channels of the latents fed in
    codebook_dim: int | None = None  # None: dim; smaller: low-dim codebook behind linear projections
    metric: Literal["l2", "cosine"] = "l2"
    update: Literal["ema", "grad"] = "ema"
    decay: float = 0.99  # EMA decay of the codebook statistics
    eps: float = 1e-5  # Laplace smoothing of the EMA counts
    commitment_weight: float = 0.25  # beta in VQ-VAE
    codebook_weight: float = 1.0  # weight of ||sg(z) - e||^2 when update="grad"
    kmeans_init: bool = True  # initialise from the first training batch by k-means
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.03  # dead when EMA share < threshold / K; 0 disables restarts

    def __post_init__(self) -> None:
        for name in ("codebook_size", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be at least 1 or None, got {self.codebook_dim}")
        if self.metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {self.metric!r}")
        if self.update not in ("ema", "grad"):
            raise ValueError(f"update must be 'ema' or 'grad', got {self.update!r}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {self.decay}")
        if self.dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")


class VectorQuantizer(Quantizer):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.codebook_size = config.codebook_size
        self.dim = config.dim
        code_dim = config.codebook_dim or config.dim
        self.in_proj = projection(config.dim, code_dim)
        self.out_proj = projection(code_dim, config.dim)
        codebook = torch.randn(config.codebook_size, code_dim)
        if config.metric == "cosine":
            codebook = F.normalize(codebook, dim=1)
        if config.update == "grad":
            self.codebook = torch.nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("cluster_size", torch.ones(config.codebook_size))
        self.register_buffer("initialized", torch.tensor(not config.kmeans_init))

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        self.check_input(x)
        with fp32(x.device):
            z = self._normalize(self.in_proj(to_rows(x)))
            if self.training and not bool(self.initialized):
                self._kmeans_init(z.detach())
            index = kernels.nearest_code(z.detach(), self.codebook.detach(), metric=self.config.metric)
            # -1 (non-finite rows) -> code 0; cosine codes are unit rows also while a grad-trained codebook drifts
            codes = self._normalize(F.embedding(index.clamp_min(0), self.codebook))
            loss = self.config.commitment_weight * F.mse_loss(z, codes.detach())
            if self.config.update == "grad":
                loss = loss + self.config.codebook_weight * F.mse_loss(codes, z.detach())
            if self.training:
                self._update_codebook(z.detach(), index)
            quantized = from_rows(self.out_proj(straight_through(z, codes)), x.shape)
        indices = index.view(x.shape[0], *x.shape[2:])
        metrics = usage_metrics(indices, self.codebook_size)
        metrics["dead_codes"] = self.dead_codes()
        return QuantizerOutput(quantized, indices, loss, metrics)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        with fp32(indices.device):
            rows = self.out_proj(self._normalize(F.embedding(indices.reshape(-1), self.codebook)))
            return rows.reshape(*indices.shape, self.dim).movedim(-1, 1)

    def _normalize(self, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(t, dim=-1) if self.config.metric == "cosine" else t

    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor) -> None:
        """k-means on the batch.

        In one process with at least as many codes as finite latents, k-means' optimum is known: every
        latent is its own centroid (distortion 0), so the codes are the latents in random order and the
        rest random repeats, with no search at all (``_every_latent_a_code``). Otherwise: seeds by D^2
        sampling on the lowest rank whose batch holds finite latents, then up to ``kmeans_iters`` Lloyd steps
        on every rank's data, stopping early once the mean squared distance to the assigned centroid falls
        by less than ``KMEANS_TOL`` of itself (at once when it is 0). In one process the first Lloyd step
        reuses the assignment the seeding already tracked, so it costs no N x K pass of its own. A batch
        with no finite latent on any rank (empty, or all NaN/Inf) leaves the codebook uninitialised for the
        next batch.
        """
        k = self.codebook_size
        finite = torch.isfinite(z).all(1)
        n_finite = int(finite.sum())
        seeder = _first_rank_with_rows(n_finite, z.device)
        if seeder is None:
            return
        if not _distributed.is_distributed() and n_finite <= k:
            centroids, counts = self._every_latent_a_code(z[finite] if n_finite < z.shape[0] else z)
        else:
            centroids, counts = self._lloyd(z, seeder)
        self.codebook.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        if self.config.update == "ema":
            self.embed_sum.copy_(centroids * counts[:, None])
        self.initialized.fill_(True)

    def _every_latent_a_code(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centroids and counts of k-means when K >= the ``rows`` given (all finite): the rows in random
        order, then K - n uniformly drawn repeats (as k-means++ falls back to once every latent is a
        seed), count 1 per row (exact for distinct rows) and 0 per repeat."""
        n, k = rows.shape[0], self.codebook_size
        order = torch.cat([torch.randperm(n, device=rows.device), torch.randint(0, n, (k - n,), device=rows.device)])
        counts = torch.zeros(k, device=rows.device)
        counts[:n] = 1.0
        return rows[order], counts

    def _lloyd(self, z: torch.Tensor, seeder: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k-means++ seeds (drawn on rank ``seeder``) refined by Lloyd steps over every rank's data: centroids
        and counts."""
        k = self.codebook_size
        index = distance = None
        if _distributed.rank() == seeder:
            centroids, index, distance = self._seed_centroids(z)
        else:
            centroids = torch.empty(k, z.shape[1], device=z.device)
        _distributed.broadcast_(centroids, src=seeder)
        if _distributed.is_distributed():
            index = distance = None  # each rank assigns its own batch
        counts = torch.zeros(k, device=z.device)
        previous = float("inf")
        for _ in range(self.config.kmeans_iters):
            if index is None:
                index, distance = kernels.nearest_code(z, centroids, metric=self.config.metric, return_distance=True)
            counts, sums = kernels.codebook_stats(z, index, k)
            finite = index >= 0
            distortion = torch.stack([distance[finite].sum(), finite.sum().float()])
            _distributed.all_reduce_sum_(counts, sums, distortion)
            used = counts > 0
            centroids[used] = self._normalize(sums[used] / counts[used, None])
            index = None
            # Stop once the assignment's mean squared distance (same on every rank) stops falling.
            mean = float(distortion[0] / distortion[1].clamp_min(1.0))
            if mean <= 0.0 or (previous < float("inf") and previous - mean <= KMEANS_TOL * previous):
                break
            previous = mean
        return centroids, counts

    def _seed_centroids(self, z: torch.Tensor, rounds: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k-means++ seeding, batched: up to ``rounds`` draws of latents with probability proportional
        to the squared distance to the nearest seed so far (one draw per seed when K <= rounds).

        Returns the seeds ``[K, D]`` and each latent's nearest seed and squared distance to it (-1 / NaN
        for non-finite rows), kept up to date round by round: Lloyd's first assignment. A seed wins a
        row only at a strictly smaller distance, so ties keep the lower index, as in ``nearest_code``.
        """
        k, metric = self.codebook_size, self.config.metric
        finite = torch.isfinite(z).all(1)
        valid = finite.float() if bool(finite.any()) else torch.ones(z.shape[0], device=z.device)
        seeds = z[torch.multinomial(valid, 1)]
        per_round = -(-(k - 1) // max(1, min(rounds, k) - 1)) if k > 1 else 0
        start, owner, nearest = 0, None, None
        while True:
            index, distance = kernels.nearest_code(z, seeds[start:], metric=metric, return_distance=True)
            if owner is None:
                owner, nearest = index, distance
            else:
                closer = distance < nearest
                owner = torch.where(closer, index + start, owner)
                nearest = torch.where(closer, distance, nearest)
            if seeds.shape[0] == k:
                return seeds.contiguous(), owner, nearest
            weights = torch.nan_to_num(nearest, nan=0.0) * valid
            if not bool((weights > 0).any()):
                weights = valid
            take = min(per_round, k - seeds.shape[0])
            pick = torch.multinomial(weights, take, replacement=bool((weights > 0).sum() < take))
            start = seeds.shape[0]
            seeds = torch.cat([seeds, z[pick]])

    @torch.no_grad()
    def _update_codebook(self, z: torch.Tensor, index: torch.Tensor) -> None:
        cfg = self.config
        counts, sums = kernels.codebook_stats(z, index, self.codebook_size)
        if cfg.update == "ema":
            _distributed.all_reduce_sum_(counts, sums)
            new = kernels.ema_apply_(self.cluster_size, self.embed_sum, counts, sums, decay=cfg.decay, eps=cfg.eps)
            self.codebook.copy_(self._normalize(new))
        else:
            _distributed.all_reduce_sum_(counts)
            self.cluster_size.mul_(cfg.decay).add_(counts, alpha=1.0 - cfg.decay)
        self._restart_dead_codes(z)

    def dead_codes(self) -> torch.Tensor:
        """How many codes are dead now: EMA share of assignments under ``dead_code_threshold / K``."""
        return self._dead_mask().sum().float()

    def _dead_mask(self) -> torch.Tensor:
        return self.cluster_size < self.config.dead_code_threshold * self.cluster_size.mean()

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> None:
        """Re-seed dead codes with random finite latents of the lowest rank whose batch holds any, and a fair
        (mean) count; none when no rank's batch holds a finite latent."""
        dead = self._dead_mask()
        if self.config.dead_code_threshold == 0 or not bool(dead.any()):
            return
        rows = z[torch.isfinite(z).all(1)]
        seeder = _first_rank_with_rows(rows.shape[0], z.device)
        if seeder is None:
            return
        if _distributed.rank() == seeder:
            seeds = rows[torch.randint(0, rows.shape[0], (self.codebook_size,), device=z.device)]
        else:
            seeds = torch.empty(self.codebook_size, z.shape[1], device=z.device)
        _distributed.broadcast_(seeds, src=seeder)
        fair = self.cluster_size.mean()
        self.codebook.data[dead] = seeds[dead]
        self.cluster_size[dead] = fair
        if self.config.update == "ema":
            self.embed_sum[dead] = seeds[dead] * fair


def _first_rank_with_rows(rows: int, device: torch.device) -> int | None:
    """The lowest rank that holds ``rows > 0`` finite latents (every rank passes its own count), None when no
    rank does; in one process 0 or None. One all-reduce of ``world_size`` numbers."""
    if not _distributed.is_distributed():
        return 0 if rows else None
    counts = torch.zeros(_distributed.world_size(), device=device)
    counts[_distributed.rank()] = float(rows)
    _distributed.all_reduce_sum_(counts)
    holders = (counts > 0).nonzero()
    return int(holders[0, 0]) if holders.numel() else None
