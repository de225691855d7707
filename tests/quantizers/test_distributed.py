"""Two CPU processes on gloo, each with its own data: their codebooks stay identical.

Workers run under ``mp.spawn(join=False)`` joined with a deadline, and the process group has a short
timeout, so ranks that disagree on their collectives fail the test instead of hanging the suite.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tokenizer.quantizers import ResidualConfig, ResidualQuantizer, VectorQuantizer, VQConfig

CONFIGS = {
    "ema-restart": VQConfig(codebook_size=32, dim=4, decay=0.9, dead_code_threshold=0.5),
    "ema-cosine": VQConfig(codebook_size=16, dim=4, metric="cosine", decay=0.8, dead_code_threshold=0.3),
    "no-restart": VQConfig(codebook_size=24, dim=4, decay=0.9, dead_code_threshold=0.0),
}
ROWS_PER_RANK = 2 * 6 * 6
DEADLINE_S = 120.0


def _spawn_with_deadline(fn, args: tuple, nprocs: int, deadline_s: float) -> None:
    """``mp.spawn`` that fails (and kills its workers) instead of waiting forever on a hung collective."""
    context = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    stop = time.monotonic() + deadline_s
    while not context.join(timeout=1.0):
        if time.monotonic() > stop:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{fn.__name__}: workers still running after {deadline_s:.0f} s (a hung collective)")


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tensors = {}
        for name, config in CONFIGS.items():
            torch.manual_seed(100 + rank)  # different initial codebooks and data on each rank
            vq = VectorQuantizer(config)
            for _ in range(6):
                vq(torch.randn(2, 4, 6, 6) * (1 + rank) + 2 * rank)
            tensors[f"{name}.codebook"] = vq.codebook
            tensors[f"{name}.cluster_size"] = vq.cluster_size
        save_file(tensors, f"{out_dir}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_codebooks_agree_across_two_processes(tmp_path):
    _spawn_with_deadline(_worker, (2, str(tmp_path / "init"), str(tmp_path)), 2, DEADLINE_S)
    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    for name in CONFIGS:
        assert torch.equal(rank0[f"{name}.codebook"], rank1[f"{name}.codebook"]), name
        assert torch.equal(rank0[f"{name}.cluster_size"], rank1[f"{name}.cluster_size"]), name
    # Without restarts the EMA counts keep summing to the rows of both ranks: the stats were all-reduced.
    total = float(rank0["no-restart.cluster_size"].sum())
    assert abs(total - 2 * ROWS_PER_RANK) < 1e-3


def _empty_rank0_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank 0's batches are all NaN; rank 1's are finite, far from the origin."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    try:
        torch.manual_seed(300 + rank)
        vq = VectorQuantizer(VQConfig(codebook_size=8, dim=4, decay=0.5, dead_code_threshold=0.9))
        tensors = {}
        for call in range(3):
            z = torch.full((1, 4, 4, 4), float("nan")) if rank == 0 else torch.randn(1, 4, 4, 4) + 10.0 * (call + 1)
            vq(z)
            tensors[f"codebook{call}"] = vq.codebook.detach().clone()
        tensors["initialized"] = vq.initialized.float()
        save_file(tensors, f"{out_dir}/empty{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_a_rank_without_finite_latents_does_not_seed_the_codebook(tmp_path):
    """k-means seeds and dead-code restarts come from the lowest rank with finite latents, so a rank whose batch
    is all NaN neither leaves the codebook uninitialised nor fills it with NaN."""
    _spawn_with_deadline(_empty_rank0_worker, (2, str(tmp_path / "init"), str(tmp_path)), 2, DEADLINE_S)
    rank0 = load_file(tmp_path / "empty0.safetensors")
    rank1 = load_file(tmp_path / "empty1.safetensors")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert rank0["initialized"].item() == 1.0
    assert torch.isfinite(rank0["codebook0"]).all() and rank0["codebook0"].mean() > 8.0  # rank 1's first batch
    # Rank 1's data moves to ~30: codes left behind die and are re-seeded from its batch.
    assert (rank0["codebook2"].mean(dim=1) > 25.0).sum() >= 4, rank0["codebook2"]  # EMA alone moves one code


RESIDUAL = ResidualConfig(VQConfig(codebook_size=16, dim=4, decay=0.9), depth=4, quantize_dropout=0.75)
RESIDUAL_CALLS = 8


def _residual_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    try:
        torch.manual_seed(200 + rank)  # each rank's global RNG differs, as under the trainer
        rq = ResidualQuantizer(RESIDUAL).train()
        depths = []
        for _ in range(RESIDUAL_CALLS):
            out = rq(torch.randn(2, 4, 5, 5) * (1 + rank))
            depths.append(int(out.metrics["active_depth"]))
        tensors = dict(rq.state_dict())
        tensors["depths"] = torch.tensor(depths)
        save_file(tensors, f"{out_dir}/residual{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_residual_quantize_dropout_agrees_across_two_processes(tmp_path):
    _spawn_with_deadline(_residual_worker, (2, str(tmp_path / "init"), str(tmp_path)), 2, DEADLINE_S)
    rank0 = load_file(tmp_path / "residual0.safetensors")
    rank1 = load_file(tmp_path / "residual1.safetensors")
    # Both ranks truncated to the same depth at every call, and the dropout did truncate.
    assert torch.equal(rank0["depths"], rank1["depths"]), (rank0["depths"], rank1["depths"])
    assert int(rank0["depths"].min()) < RESIDUAL.depth
    names = [name for name in rank0 if name.endswith(("codebook", "cluster_size", "embed_sum"))]
    assert len(names) == 3 * RESIDUAL.depth
    for name in names:
        assert torch.equal(rank0[name], rank1[name]), name
