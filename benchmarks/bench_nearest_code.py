"""nearest_code vs the N x K reference, cdist + argmin, and (CUDA) the bare matmul, side by side."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import DEVICE, FULL, run, skip_if_too_big

import kernels
from kernels import reference

if FULL:
    SHAPES = list(itertools.product((4096, 65536), (1024, 16384, 65536), (8, 32, 256)))
    if DEVICE.type == "cuda":
        SHAPES += [(262144, k, d) for k in (1024, 16384, 65536) for d in (8, 32, 256)] + [(65537, 1031, 12)]
else:
    SHAPES = [(4096, 1024, 8), (4096, 1024, 32), (4096, 1024, 256), (4096, 16384, 8), (65536, 16384, 8)]
IMPLS = ["ours", "reference", "cdist_argmin"] + (["mm_only"] if DEVICE.type == "cuda" else [])


def _call(impl: str, z: torch.Tensor, codebook: torch.Tensor):
    if impl == "ours":
        return lambda: kernels.nearest_code(z, codebook)
    if impl == "reference":
        return lambda: reference.nearest_code(z, codebook)
    if impl == "cdist_argmin":
        return lambda: torch.cdist(z, codebook).argmin(1)
    return lambda: torch.mm(z, codebook.T)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-K{}-D{}".format(*s))
def test_nearest_code(benchmark, device, shape, impl):
    n, k, d = shape
    benchmark.group = f"nearest_code N={n} K={k} D={d}"
    if impl != "ours":
        skip_if_too_big(n, k, impl)
    z = torch.randn(n, d, device=device)
    codebook = torch.randn(k, d, device=device)
    rounds = 2 if device.type == "cpu" and n * k * d > 2**32 else None
    result = run(benchmark, _call(impl, z, codebook), device, rounds=rounds)
    if impl in ("reference", "cdist_argmin"):  # cross-check while the tensors are here
        ours = kernels.nearest_code(z, codebook)
        assert (ours == result).float().mean() > 0.999


@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_nearest_code_cosine(benchmark, device, impl):
    n, k, d = 16384, 4096, 32
    benchmark.group = f"nearest_code cosine N={n} K={k} D={d}"
    z = torch.randn(n, d, device=device)
    codebook = torch.randn(k, d, device=device)
    fn = kernels.nearest_code if impl == "ours" else reference.nearest_code
    run(benchmark, lambda: fn(z, codebook, metric="cosine"), device)
