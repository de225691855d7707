"""codebook_stats / ema_update_ vs the one-hot reference under uniform, Zipf and collapsed assignments."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, FULL, run, skip_if_too_big

import kernels
from kernels import reference

SHAPES = [(65536, 1024, 32), (65536, 16384, 8), (65536, 1024, 256)]
if FULL:
    SHAPES += [(4096, 65536, 8), (65536, 65536, 32)] + ([(1 << 20, 16384, 32)] if DEVICE.type == "cuda" else [])
ASSIGNMENTS = ["uniform", "zipf", "collapsed"]


def _indices(kind: str, n: int, k: int, device: torch.device) -> torch.Tensor:
    if kind == "uniform":
        return torch.randint(0, k, (n,), device=device)
    if kind == "zipf":
        weights = 1.0 / torch.arange(1, k + 1, dtype=torch.float64, device=device) ** 1.1
        return torch.multinomial(weights, n, replacement=True)
    return torch.zeros(n, dtype=torch.int64, device=device)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("kind", ASSIGNMENTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-K{}-D{}".format(*s))
def test_codebook_stats(benchmark, device, shape, kind, impl):
    n, k, d = shape
    benchmark.group = f"codebook_stats {kind} N={n} K={k} D={d}"
    if impl == "reference":
        skip_if_too_big(n, k)
    z = torch.randn(n, d, device=device)
    idx = _indices(kind, n, k, device)
    fn = kernels.codebook_stats if impl == "ours" else reference.codebook_stats
    run(benchmark, lambda: fn(z, idx, k), device)


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("kind", ASSIGNMENTS)
def test_ema_update(benchmark, device, kind, impl):
    n, k, d = 65536, 1024, 32
    benchmark.group = f"ema_update_ {kind} N={n} K={k} D={d}"
    z = torch.randn(n, d, device=device)
    idx = _indices(kind, n, k, device)
    state = (torch.ones(k, device=device), torch.randn(k, d, device=device))
    fn = kernels.ema_update_ if impl == "ours" else reference.ema_update_
    run(benchmark, lambda: fn(*state, z, idx, decay=0.99, eps=1e-5), device)
