"""codebook_stats / ema_apply_ / ema_update_ on every runnable path against kernels.reference."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _assignments(kind: str, n: int, k: int) -> torch.Tensor:
    if kind == "uniform" or n == 0:
        return torch.randint(0, k, (n,))
    if kind == "zipf":  # p(k) ~ 1 / (k + 1)^1.1: a few codes take most latents
        weights = 1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** 1.1
        return torch.multinomial(weights, n, replacement=True)
    if kind == "collapsed":  # every latent on one code: the worst case for atomics
        return torch.full((n,), k // 2)
    if kind == "with_invalid":  # -1 (non-finite rows from nearest_code) and out-of-range entries
        idx = torch.randint(-1, k + 3, (n,))
        idx[::7] = -1
        return idx
    raise ValueError(kind)


def _assert_stats_close(counts, sums, ref_counts, ref_sums, z):
    assert counts.dtype == torch.float32 and sums.dtype == torch.float32
    assert torch.equal(counts.cpu(), ref_counts.cpu())  # integers: exact in fp32
    # fp32 sums in another order: error grows with the number of terms per code
    largest = float(z.float().abs().amax()) if z.numel() else 1.0
    atol = 1e-5 * max(1.0, float(ref_counts.amax())) * max(1.0, largest)
    torch.testing.assert_close(sums.cpu(), ref_sums.cpu(), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("kind", ["uniform", "zipf", "collapsed", "with_invalid"])
@pytest.mark.parametrize("n, k, d", [(0, 3, 4), (1, 1, 1), (1, 5, 3), (130, 7, 1), (1000, 37, 20), (257, 300, 129)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_codebook_stats_matches_reference(path, kind, n, k, d, dtype):
    z = torch.randn(n, d).to(path.device, dtype)
    idx = _assignments(kind, n, k).to(path.device)
    counts, sums = kernels.codebook_stats(z, idx, k)
    assert counts.shape == (k,) and sums.shape == (k, d)
    _assert_stats_close(counts, sums, *reference.codebook_stats(z, idx, k), z)


def test_codebook_stats_int32_indices(path):
    z = torch.randn(300, 6, device=path.device)
    idx = torch.randint(0, 10, (300,), device=path.device)
    counts, sums = kernels.codebook_stats(z, idx.int(), 10)
    _assert_stats_close(counts, sums, *reference.codebook_stats(z, idx, 10), z)


@pytest.mark.parametrize("kind", ["uniform", "zipf", "collapsed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ema_update_matches_reference_over_steps(path, kind, dtype):
    k, d = 33, 12
    state = [torch.rand(k, device=path.device), torch.randn(k, d, device=path.device)]
    ref_state = [t.clone() for t in state]
    for step in range(4):
        z = torch.randn(500, d).to(path.device, dtype)
        idx = _assignments(kind, 500, k).to(path.device)
        codebook = kernels.ema_update_(*state, z, idx, decay=0.9, eps=1e-5)
        ref_codebook = reference.ema_update_(*ref_state, z, idx, decay=0.9, eps=1e-5)
        torch.testing.assert_close(state[0], ref_state[0], rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(state[1], ref_state[1], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(codebook, ref_codebook, rtol=1e-5, atol=1e-4)


def test_two_step_form_equals_one_call(path):
    """What a distributed caller does: stats per shard, summed (all-reduce), then ema_apply_."""
    k, d = 20, 5
    z = torch.randn(400, d, device=path.device)
    idx = torch.randint(0, k, (400,), device=path.device)
    one = [torch.rand(k, device=path.device), torch.randn(k, d, device=path.device)]
    two = [t.clone() for t in one]
    expected = kernels.ema_update_(*one, z, idx, decay=0.8, eps=1e-3)
    parts = [kernels.codebook_stats(z[s], idx[s], k) for s in (slice(0, 150), slice(150, 400))]
    counts = parts[0][0] + parts[1][0]
    sums = parts[0][1] + parts[1][1]
    got = kernels.ema_apply_(*two, counts, sums, decay=0.8, eps=1e-3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two[0], one[0])


def test_ema_converges_to_cluster_means(path):
    """decay=0 makes one step a k-means centroid update (up to smoothing)."""
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]], device=path.device)
    idx = torch.arange(3, device=path.device).repeat(200)
    z = centres[idx] + 0.1 * torch.randn(600, 2, device=path.device)
    state = [torch.zeros(3, device=path.device), torch.zeros(3, 2, device=path.device)]
    codebook = kernels.ema_update_(*state, z, idx, decay=0.0, eps=1e-6)
    means = torch.stack([z[idx == j].mean(0) for j in range(3)])
    torch.testing.assert_close(codebook, means, rtol=1e-4, atol=1e-4)


class TestBadInput:
    def test_stats_dtype_and_shapes(self):
        with pytest.raises(TypeError, match="idx must be an integer tensor"):
            kernels.codebook_stats(torch.randn(4, 2), torch.zeros(4), 3)
        with pytest.raises(ValueError, match=r"idx must have shape \(4,\)"):
            kernels.codebook_stats(torch.randn(4, 2), torch.zeros(5, dtype=torch.long), 3)
        with pytest.raises(TypeError, match="z must be a floating tensor"):
            kernels.codebook_stats(torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, dtype=torch.long), 3)
        with pytest.raises(ValueError, match="num_codes must be a positive int"):
            kernels.codebook_stats(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), 0)
        with pytest.raises(ValueError, match="z on cpu, idx on meta"):
            kernels.codebook_stats(torch.randn(4, 2), torch.zeros(4, dtype=torch.long, device="meta"), 3)

    def test_ema_state(self):
        z, idx = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
        with pytest.raises(TypeError, match="cluster_size must be float32"):
            kernels.ema_update_(torch.zeros(3, dtype=torch.float16), torch.zeros(3, 2), z, idx, decay=0.9)
        with pytest.raises(ValueError, match="must agree on K"):
            kernels.ema_update_(torch.zeros(3), torch.zeros(4, 2), z, idx, decay=0.9)
        with pytest.raises(ValueError, match="decay must lie in"):
            kernels.ema_update_(torch.zeros(3), torch.zeros(3, 2), z, idx, decay=1.5)
        with pytest.raises(ValueError, match="eps must be positive"):
            kernels.ema_update_(torch.zeros(3), torch.zeros(3, 2), z, idx, decay=0.9, eps=0.0)
        with pytest.raises(ValueError, match="z has D=2 but embed_sum has D=3"):
            kernels.ema_update_(torch.zeros(3), torch.zeros(3, 3), z, idx, decay=0.9)
        with pytest.raises(ValueError, match="counts .* and sums .* must match"):
            kernels.ema_apply_(
                torch.zeros(3), torch.zeros(3, 2), torch.zeros(4), torch.zeros(3, 2), decay=0.9, eps=1e-5
            )
