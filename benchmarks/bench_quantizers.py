"""Our quantizers vs vector-quantize-pytorch (optional, benchmark-only) at the issue's shapes.

- VQ training forward: codebook 16384 x 8, 16384 latents ([16, 8, 32, 32]).
- LFQ d = 14 forward + backward with the entropy loss on [16, 14, 32, 32].
- Our VQ's first training step (k-means initialisation) against its ordinary step (no peer).
"""

from __future__ import annotations

import pytest
import torch
from conftest import run

from tokenizer.quantizers import LFQ, LFQConfig, VectorQuantizer, VQConfig

vqp = pytest.importorskip("vector_quantize_pytorch", reason="pip install vector-quantize-pytorch to compare")


def vq_step(impl: str, device: torch.device):
    """A training-mode forward of a 16384 x 8 EMA codebook over 16384 latents (no k-means init)."""
    x = torch.randn(16, 8, 32, 32, device=device)
    if impl == "ours":
        quantizer = VectorQuantizer(VQConfig(codebook_size=16384, dim=8, kmeans_init=False)).to(device).train()
        return lambda: quantizer(x)
    theirs = vqp.VectorQuantize(dim=8, codebook_size=16384, decay=0.99, commitment_weight=0.25).to(device).train()
    rows = x.flatten(2).transpose(1, 2).contiguous()  # [B, H*W, C]: its layout
    return lambda: theirs(rows)


def vq_first_and_ordinary_step(device: torch.device, metric: str = "l2"):
    """Two calls on the issue's VQ (16384 x 8 EMA codebook, k-means init on, 16384 latents): the first
    training forward of a fresh quantizer (k-means initialisation + the step; building the module, a few
    ms, is included) and an ordinary training forward of an already initialised one, on the same batch."""
    x = torch.randn(16, 8, 32, 32, device=device)
    config = VQConfig(codebook_size=16384, dim=8, metric=metric)
    trained = VectorQuantizer(config).to(device).train()
    trained(x)  # initialised: later calls are ordinary steps

    def first():
        return VectorQuantizer(config).to(device).train()(x)

    return first, lambda: trained(x)


def lfq_step(impl: str, device: torch.device):
    """LFQ with 2^14 codes: forward, entropy + commitment loss, backward to the input."""
    x = torch.randn(16, 14, 32, 32, device=device)
    if impl == "ours":
        quantizer = LFQ(LFQConfig(dim=14, entropy_weight=0.1, commitment_weight=0.25)).to(device).train()

        def step():
            xi = x.clone().requires_grad_()
            out = quantizer(xi)
            (out.quantized.square().mean() + out.loss).backward()
            return xi.grad

        return step
    theirs = vqp.LFQ(dim=14, codebook_size=2**14, entropy_loss_weight=0.1, commitment_loss_weight=0.25).to(device)
    theirs.train()

    def step():
        xi = x.clone().requires_grad_()
        quantized, _, aux_loss = theirs(xi)
        (quantized.square().mean() + aux_loss).backward()
        return xi.grad

    return step


@pytest.mark.parametrize("impl", ["ours", "vector_quantize_pytorch"])
def test_vq_training_forward(benchmark, device, impl):
    benchmark.group = "VQ train fwd K=16384 D=8 N=16384"
    run(benchmark, vq_step(impl, device), device, rounds=3)


@pytest.mark.parametrize("impl", ["ours", "vector_quantize_pytorch"])
def test_lfq_forward_backward(benchmark, device, impl):
    benchmark.group = "LFQ d=14 fwd+bwd with entropy, 16x14x32x32"
    run(benchmark, lfq_step(impl, device), device, rounds=3)


@pytest.mark.parametrize("step", ["first", "ordinary"])
def test_vq_first_step_vs_ordinary_step(benchmark, device, step):
    benchmark.group = "VQ train fwd, first (k-means init) vs ordinary step, K=16384 D=8 N=16384"
    first, ordinary = vq_first_and_ordinary_step(device)
    run(benchmark, first if step == "first" else ordinary, device, rounds=3)
