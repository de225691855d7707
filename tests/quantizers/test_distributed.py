"""Two CPU processes on gloo, each with its own data: their codebooks stay identical."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tokenizer.quantizers import VectorQuantizer, VQConfig

CONFIGS = {
    "ema-restart": VQConfig(codebook_size=32, dim=4, decay=0.9, dead_code_threshold=0.5),
    "ema-cosine": VQConfig(codebook_size=16, dim=4, metric="cosine", decay=0.8, dead_code_threshold=0.3),
    "no-restart": VQConfig(codebook_size=24, dim=4, decay=0.9, dead_code_threshold=0.0),
}
ROWS_PER_RANK = 2 * 6 * 6


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
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(tmp_path / "rank0.safetensors")
    rank1 = load_file(tmp_path / "rank1.safetensors")
    for name in CONFIGS:
        assert torch.equal(rank0[f"{name}.codebook"], rank1[f"{name}.codebook"]), name
        assert torch.equal(rank0[f"{name}.cluster_size"], rank1[f"{name}.cluster_size"]), name
    # Without restarts the EMA counts keep summing to the rows of both ranks: the stats were all-reduced.
    total = float(rank0["no-restart.cluster_size"].sum())
    assert abs(total - 2 * ROWS_PER_RANK) < 1e-3
