"""fsq_quantize forward + backward vs the autograd reference; effective bandwidth in extra_info."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, run

import kernels
from kernels import reference

ROWS = [65536, 1 << 20] + ([1 << 22, 1 << 24] if DEVICE.type == "cuda" else [])
LEVELS = [(8, 5, 5, 5), (8, 8, 8, 6, 5)]


@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("levels", LEVELS, ids=lambda lv: "x".join(map(str, lv)))
@pytest.mark.parametrize("rows", ROWS)
def test_fsq_forward_backward(benchmark, device, rows, levels, impl):
    benchmark.group = f"fsq fwd+bwd rows={rows} levels={levels}"
    z = torch.randn(rows, len(levels), device=device, requires_grad=True)
    grad_codes = torch.randn(rows, len(levels), device=device)
    fn = kernels.fsq_quantize if impl == "ours" else reference.fsq_quantize

    def step():
        codes, _ = fn(z, levels)
        (grad,) = torch.autograd.grad(codes, z, grad_codes)
        return grad

    run(benchmark, step, device)
    # Minimum traffic of a fused pass: fwd reads z, writes codes + indices; bwd reads z + grad, writes grad.
    bytes_moved = rows * len(levels) * 4 * 5 + rows * 8
    benchmark.extra_info["GB/s"] = round(bytes_moved / benchmark.stats.stats.min / 1e9, 1)
