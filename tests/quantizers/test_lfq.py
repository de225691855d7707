"""LFQ: sign codes, indices, and the factorised entropy terms against the direct 2^d formula."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from tokenizer.quantizers import LFQ, LFQConfig
from tokenizer.quantizers.lfq import entropy_terms


def _direct_entropy_terms(z: torch.Tensor, temperature: float):
    """Per-sample and codebook entropy from the full N x 2^d softmax over all sign codes."""
    d = z.shape[1]
    codes = ((torch.arange(2**d)[:, None] >> torch.arange(d)) & 1).double() * 2 - 1
    logits = -(torch.cdist(z.double(), codes) ** 2) / temperature
    p = logits.softmax(dim=1)
    per_sample = -(p * logits.log_softmax(dim=1)).sum(1).mean()
    avg = p.mean(0)
    codebook = -(avg * avg.clamp_min(1e-300).log()).sum()
    return per_sample, codebook


@pytest.mark.parametrize("d", [1, 2, 5, 8, 11])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_entropy_terms_equal_the_direct_formula(d, temperature):
    z = torch.randn(37, d, dtype=torch.float64).float() * 0.5
    per_sample, codebook = entropy_terms(z, temperature)
    ref_per_sample, ref_codebook = _direct_entropy_terms(z, temperature)
    torch.testing.assert_close(per_sample.double(), ref_per_sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(codebook.double(), ref_codebook, rtol=1e-4, atol=1e-5)


def test_entropy_gradients_equal_the_direct_formula():
    z = (torch.randn(23, 6) * 0.5).requires_grad_()
    z64 = z.detach().double().requires_grad_()
    per_sample, codebook = entropy_terms(z, 0.7)
    (per_sample - 0.5 * codebook).backward()
    ref_per_sample, ref_codebook = _direct_entropy_terms(z64, 0.7)
    (ref_per_sample - 0.5 * ref_codebook).backward()
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-6)


def _peak_rss_growth(fn) -> int:
    """Bytes the process's resident-set high-water mark grows by while ``fn`` runs (Linux)."""

    def status(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_d18_runs_in_bounded_memory():
    """16,384 positions x 2^18 codes: the direct matrix would need 16 GiB; this stays under 1 GiB."""
    z = torch.randn(16384, 18, requires_grad=True)

    def step():
        per_sample, codebook = entropy_terms(z, 0.5)
        (per_sample - codebook).backward()
        assert 0 < float(codebook.detach()) <= 18 * math.log(2) + 1e-3

    assert _peak_rss_growth(step) < 1 << 30
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("shape", [(2, 6, 4, 5), (2, 6, 3, 2, 2)], ids=str)
def test_contract_codes_and_indices(shape):
    lfq = LFQ(LFQConfig(dim=6))
    x = torch.randn(*shape, requires_grad=True)
    out = lfq(x)
    assert out.quantized.shape == x.shape and out.indices.shape == (shape[0], *shape[2:])
    assert set(out.quantized.detach().unique().tolist()) <= {-1.0, 1.0}
    bits = (x.detach() > 0).long().movedim(1, -1)
    assert torch.equal(out.indices, (bits * 2 ** torch.arange(6)).sum(-1))
    assert torch.equal(lfq.indices_to_codes(out.indices), out.quantized.detach())
    (out.quantized.sum() + out.loss).backward()
    assert x.grad.abs().sum() > 0
    assert {"per_sample_entropy", "codebook_entropy", "perplexity", "usage"} <= set(out.metrics)


def test_loss_is_commitment_plus_weighted_entropy():
    cfg = LFQConfig(dim=4, commitment_weight=0.3, entropy_weight=0.2, diversity_gamma=0.7, temperature=0.5)
    lfq = LFQ(cfg)
    x = torch.randn(2, 4, 3, 3)
    out = lfq(x)
    rows = x.movedim(1, -1).reshape(-1, 4)
    per_sample, codebook = _direct_entropy_terms(rows, 0.5)
    expected = 0.3 * F.mse_loss(rows, torch.where(rows > 0, 1.0, -1.0)) + 0.2 * (per_sample - 0.7 * codebook)
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-4, atol=1e-5)
    lfq.eval()
    assert "codebook_entropy" not in lfq(x).metrics  # the entropy term is a training loss only


def test_projection_to_more_bits():
    lfq = LFQ(LFQConfig(dim=8, codebook_bits=12))
    out = lfq(torch.randn(2, 8, 3, 3))
    assert lfq.codebook_size == 4096 and out.indices.max() < 4096
    torch.testing.assert_close(lfq.indices_to_codes(out.indices), out.quantized)


class TestBadConfig:
    def test_bits(self):
        with pytest.raises(ValueError, match="codebook_bits must lie in"):
            LFQConfig(dim=4, codebook_bits=40)

    def test_temperature(self):
        with pytest.raises(ValueError, match="temperature must be positive"):
            LFQConfig(dim=4, temperature=0)

    def test_channel_mismatch(self):
        with pytest.raises(ValueError, match="x has 3 channels but LFQ was built for dim=4"):
            LFQ(LFQConfig(dim=4))(torch.randn(1, 3, 2, 2))
