"""VectorQuantizer: contract, STE, EMA/grad learning, k-means init, dead-code restart, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenizer.quantizers import VectorQuantizer, VQConfig


def _blobs(n_centres=8, per=64, dim=4, spread=0.05, seed=0):
    """Well-separated clusters laid out as a [B, C, H, W] batch, and their centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, dim, generator=g) * 4
    assignment = torch.arange(n_centres).repeat_interleave(per)
    rows = centres[assignment] + spread * torch.randn(n_centres * per, dim, generator=g)
    return rows.T.reshape(1, dim, n_centres, per), centres


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (2, 6, 3, 4, 5), (1, 6, 1, 1)], ids=str)
@pytest.mark.parametrize("config_kw", [{}, {"metric": "cosine"}, {"update": "grad"}, {"codebook_dim": 3}], ids=str)
def test_contract(shape, config_kw):
    vq = VectorQuantizer(VQConfig(codebook_size=32, dim=6, **config_kw))
    x = torch.randn(*shape)
    out = vq(x)
    assert out.quantized.shape == x.shape and out.quantized.dtype == torch.float32
    assert out.indices.shape == (shape[0], *shape[2:]) and out.indices.dtype == torch.int64
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert {"perplexity", "usage", "dead_codes"} <= set(out.metrics)
    vq.eval()
    out = vq(x)
    torch.testing.assert_close(vq.indices_to_codes(out.indices), out.quantized)


def test_quantized_values_are_nearest_codes():
    vq = VectorQuantizer(VQConfig(codebook_size=50, dim=3, kmeans_init=False)).eval()
    x = torch.randn(2, 3, 4, 4)
    out = vq(x)
    rows = x.movedim(1, -1).reshape(-1, 3)
    expected = torch.cdist(rows.double(), vq.codebook.double()).argmin(1)
    assert torch.equal(out.indices.reshape(-1), expected)
    torch.testing.assert_close(out.quantized.movedim(1, -1).reshape(-1, 3), vq.codebook[expected])


def test_straight_through_gradient_reaches_the_input():
    vq = VectorQuantizer(VQConfig(codebook_size=16, dim=4, commitment_weight=0.0, kmeans_init=False))
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    (vq(x).quantized * upstream).sum().backward()
    torch.testing.assert_close(x.grad, upstream)  # identity through the rounding to codes


def test_commitment_loss_pulls_latents_to_codes():
    vq = VectorQuantizer(VQConfig(codebook_size=16, dim=4, commitment_weight=1.0, kmeans_init=False)).eval()
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    out = vq(x)
    out.loss.backward()
    expected = 2 * (x - out.quantized.detach()) / x.numel()
    torch.testing.assert_close(x.grad, expected)


def test_bf16_input_and_autocast_quantize_in_fp32():
    vq = VectorQuantizer(VQConfig(codebook_size=64, dim=4, kmeans_init=False)).eval()
    x = torch.randn(2, 4, 6, 6)
    reference = vq(x.bfloat16().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(x.bfloat16())
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, reference.indices)


def test_ema_converges_to_cluster_centres():
    x, centres = _blobs(n_centres=4, per=128)
    vq = VectorQuantizer(VQConfig(codebook_size=16, dim=4, decay=0.8, kmeans_init=False, dead_code_threshold=0.1))
    for _ in range(60):
        out = vq(x)
    assert (torch.cdist(centres, vq.codebook).min(1).values < 0.15).all()  # a code inside every cluster
    per_cluster = [set(row.tolist()) for row in out.indices.reshape(4, 128)]
    assert all(a.isdisjoint(b) for i, a in enumerate(per_cluster) for b in per_cluster[i + 1 :])
    rows = x.movedim(1, -1).reshape(-1, 4)
    for code in out.indices.unique():  # each used code sits on the mean of its latents (Lloyd's fixed point)
        mean = rows[out.indices.reshape(-1) == code].mean(0)
        assert (vq.codebook[code] - mean).norm() < 0.02


def test_kmeans_init_finds_the_clusters():
    x, centres = _blobs()
    vq = VectorQuantizer(VQConfig(codebook_size=8, dim=4))
    assert not bool(vq.initialized)
    out = vq(x)
    assert bool(vq.initialized)
    assert torch.cdist(centres, vq.codebook).min(1).values.max() < 0.05
    assert out.metrics["usage"] == 1.0


def test_dead_codes_are_revived():
    x, _ = _blobs(n_centres=4, per=128)
    vq = VectorQuantizer(VQConfig(codebook_size=16, dim=4, kmeans_init=False, decay=0.5, dead_code_threshold=0.2))
    with torch.no_grad():
        vq.codebook.add_(100.0)  # every code far from the data: the first one takes every latent
        vq.embed_sum.copy_(vq.codebook)
    first = vq(x)
    assert first.metrics["usage"] <= 1 / 16
    for _ in range(5):
        out = vq(x)
    assert out.metrics["usage"] >= 4 / 16  # one code per cluster at least
    assert vq.codebook.abs().max() < 50  # no code left out at 100


def test_grad_update_trains_the_codebook():
    vq = VectorQuantizer(VQConfig(codebook_size=8, dim=4, update="grad", kmeans_init=False))
    x, _ = _blobs()
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        out = vq(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else float(out.loss.detach())
    assert vq.codebook.grad is not None
    assert float(out.loss.detach()) < 0.5 * first


def test_cosine_codes_stay_on_the_sphere():
    vq = VectorQuantizer(VQConfig(codebook_size=32, dim=5, metric="cosine"))
    for _ in range(3):
        vq(torch.randn(2, 5, 4, 4) * 3)
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(32))


def test_low_dim_codebook_projects():
    vq = VectorQuantizer(VQConfig(codebook_size=32, dim=16, codebook_dim=4))
    assert vq.codebook.shape == (32, 4)
    x = torch.randn(2, 16, 3, 3, requires_grad=True)
    out = vq(x)
    (out.quantized.sum() + out.loss).backward()
    assert x.grad.abs().sum() > 0 and vq.in_proj.weight.grad is not None


def test_seeded_runs_are_reproducible():
    def run():
        torch.manual_seed(3)
        vq = VectorQuantizer(VQConfig(codebook_size=16, dim=4, dead_code_threshold=0.5))
        for _ in range(3):
            vq(torch.randn(2, 4, 4, 4))
        return vq.codebook.clone()

    assert torch.equal(run(), run())


def test_non_finite_latents_do_not_poison_the_codebook():
    vq = VectorQuantizer(VQConfig(codebook_size=8, dim=2, kmeans_init=False))
    x = torch.randn(1, 2, 4, 4)
    x[0, :, 0, 0] = float("nan")
    vq(x)
    assert torch.isfinite(vq.codebook).all() and torch.isfinite(vq.cluster_size).all()


class TestBadConfig:
    @pytest.mark.parametrize(
        "kw, match",
        [
            ({"codebook_size": 0}, "codebook_size must be at least 1"),
            ({"dim": 0}, "dim must be at least 1"),
            ({"metric": "l1"}, "metric must be"),
            ({"update": "adam"}, "update must be"),
            ({"decay": 1.0}, "decay must lie in"),
            ({"codebook_dim": 0}, "codebook_dim must be"),
            ({"dead_code_threshold": -1}, "dead_code_threshold"),
        ],
    )
    def test_config(self, kw, match):
        with pytest.raises(ValueError, match=match):
            VQConfig(**{"codebook_size": 8, "dim": 4, **kw})

    def test_channel_mismatch(self):
        vq = VectorQuantizer(VQConfig(codebook_size=8, dim=4))
        with pytest.raises(ValueError, match="x has 3 channels but VectorQuantizer was built for dim=4"):
            vq(torch.randn(1, 3, 2, 2))

    def test_rank(self):
        with pytest.raises(ValueError, match=r"\[B, C, H, W\] or \[B, C, T, H, W\]"):
            VectorQuantizer(VQConfig(codebook_size=8, dim=4))(torch.randn(4, 4))

    def test_integer_input(self):
        with pytest.raises(TypeError, match="x must be a floating tensor"):
            VectorQuantizer(VQConfig(codebook_size=8, dim=4))(torch.ones(1, 4, 2, 2, dtype=torch.long))


def test_mse_helper_matches_definition():
    # guards the loss definition used above: F.mse_loss is the mean of squared differences
    a, b = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(F.mse_loss(a, b), ((a - b) ** 2).mean())


def _init_once(x, config, seed):
    torch.manual_seed(seed)
    vq = VectorQuantizer(config).train()
    return vq, vq(x)


def test_kmeans_early_stop_keeps_usage_and_perplexity(monkeypatch):
    import tokenizer.quantizers.vq as vq_module

    # 48 blobs of uneven spread, 40 codes: clusters must be merged and split well to use every code.
    x, _ = _blobs(n_centres=48, per=40, dim=4, spread=0.6, seed=3)
    config = VQConfig(codebook_size=40, dim=4, kmeans_iters=10)
    _, early = _init_once(x, config, seed=0)
    monkeypatch.setattr(vq_module, "KMEANS_TOL", -1.0)  # never stop early: all 10 Lloyd steps
    _, full = _init_once(x, config, seed=0)
    assert early.metrics["usage"] >= full.metrics["usage"]
    assert early.metrics["perplexity"] >= 0.97 * full.metrics["perplexity"]


def test_kmeans_init_is_deterministic_under_a_seed():
    x, _ = _blobs(n_centres=16, per=32, dim=4, spread=0.5)
    config = VQConfig(codebook_size=24, dim=4)
    first, _ = _init_once(x, config, seed=5)
    again, _ = _init_once(x, config, seed=5)
    assert torch.equal(first.codebook, again.codebook) and torch.equal(first.cluster_size, again.cluster_size)


def test_kmeans_init_runs_no_search_when_every_latent_is_a_code(monkeypatch):
    import kernels
    import tokenizer.quantizers.vq as vq_module

    calls = []
    real = kernels.nearest_code
    monkeypatch.setattr(vq_module.kernels, "nearest_code", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    x = torch.randn(1, 4, 8, 8)  # 64 latents, 64 codes: every latent becomes a code
    _, out = _init_once(x, VQConfig(codebook_size=64, dim=4, kmeans_iters=10), seed=0)
    assert calls == [64]  # only the forward's own assignment (seeding + Lloyd would add more)
    assert out.metrics["usage"].item() == 1.0


def _rows_with_nan(n, dim, nan_rows, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)
    z[nan_rows, 0] = float("nan")
    return z


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_every_latent_a_code_takes_the_finite_latents_and_repeats(update):
    z = _rows_with_nan(10, 3, [2, 7], seed=1)
    finite = z[torch.isfinite(z).all(1)]  # 8 latents, 13 codes

    def init(seed):
        torch.manual_seed(seed)
        vq = VectorQuantizer(VQConfig(codebook_size=13, dim=3, update=update))
        vq._kmeans_init(z)
        return vq

    vq = init(4)
    codebook = vq.codebook.detach()
    assert bool(vq.initialized) and torch.isfinite(codebook).all()
    # the first 8 codes are the finite latents in some order, the other 5 repeats of them
    assert torch.equal(codebook[:8][torch.argsort(codebook[:8, 0])], finite[torch.argsort(finite[:, 0])])
    assert all((finite == code).all(1).any() for code in codebook[8:])
    assert torch.equal(vq.cluster_size, torch.tensor([1.0] * 8 + [0.0] * 5))
    if update == "ema":
        assert torch.equal(vq.embed_sum, codebook * vq.cluster_size[:, None])
    assert torch.equal(init(4).codebook, vq.codebook)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("k", [5, 37])  # one seed per round; several seeds per round
def test_seeding_tracks_the_nearest_seed(metric, k):
    import kernels

    z = _rows_with_nan(200, 4, [0, 50, 199], seed=2)
    vq = VectorQuantizer(VQConfig(codebook_size=k, dim=4, metric=metric))
    torch.manual_seed(6)
    seeds, owner, nearest = vq._seed_centroids(vq._normalize(z))
    index, distance = kernels.nearest_code(vq._normalize(z), seeds, metric=metric, return_distance=True)
    assert seeds.shape == (k, 4) and torch.isfinite(seeds).all()
    assert torch.equal(owner, index) and (owner[[0, 50, 199]] == -1).all()
    torch.testing.assert_close(nearest, distance, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_a_batch_without_finite_latents_leaves_the_codebook_uninitialised():
    vq = VectorQuantizer(VQConfig(codebook_size=8, dim=2)).train()
    before = vq.codebook.clone()
    vq(torch.full((1, 2, 3, 3), float("nan")))
    assert not bool(vq.initialized) and torch.isfinite(vq.codebook).all()
    assert torch.allclose(vq.codebook, before)  # EMA with no assignment keeps each code's mean
    vq(torch.randn(1, 2, 3, 3))
    assert bool(vq.initialized) and torch.isfinite(vq.codebook).all()


@pytest.mark.parametrize("seed", range(4))
def test_dead_code_restarts_draw_finite_latents_only(seed):
    torch.manual_seed(seed)
    vq = VectorQuantizer(VQConfig(codebook_size=8, dim=2, kmeans_init=False, decay=0.5, dead_code_threshold=0.9))
    x = torch.randn(1, 2, 2, 2)  # 4 latents, one NaN: most codes get no latent and die
    x[0, :, 0, 0] = float("nan")
    for _ in range(3):
        vq(x)
        assert torch.isfinite(vq.codebook).all() and torch.isfinite(vq.embed_sum).all()
    assert vq.dead_codes().item() < 8
    vq(torch.full((1, 2, 2, 2), float("nan")))  # nothing finite to draw from: no restart, nothing poisoned
    assert torch.isfinite(vq.codebook).all()
