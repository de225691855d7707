"""nearest_code on every runnable path against float64 brute force and kernels.reference."""

from __future__ import annotations

import importlib
import multiprocessing

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import _dispatch, reference

nearest_code_module = importlib.import_module("kernels.nearest_code")
CPU_SEARCH_PATHS = True  # conftest: also run every test here on the compiled CPU kernels and on faiss

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (N, K, D): empty, ones, primes, sizes just past the Triton tiles (128 rows x 128 codes, 64-wide D
# steps above 64 channels) and past the PyTorch path's 64-code groups.
SHAPES = [
    (0, 5, 3),
    (1, 1, 1),
    (1, 7, 1),
    (7, 1, 4),
    (5, 3, 2),
    (129, 130, 8),
    (300, 1031, 12),
    (257, 65, 33),
    (65, 300, 100),
    (17, 40, 1024),
    # the compiled kernel tracks blocks of codes (not code vectors) for K > 4096 with D < 32
    (129, 5000, 8),
    # faiss's fused kernels (D in 2, 3, 4, 6, 8, 12, 16) work on 16-code steps and 1-4 rows at a time
    (67, 47, 16),
    (70, 19, 4),
    (33, 100, 6),
]


def _fp64_distances(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    z64, e64 = z.double().cpu(), codebook.double().cpu()
    if metric == "cosine":
        z64, e64 = F.normalize(z64, dim=1), F.normalize(e64, dim=1)
    return ((z64[:, None, :] - e64[None, :, :]) ** 2).sum(-1)


def assert_nearest(z, codebook, index, metric="l2", distance=None, min_clear=0.5) -> None:
    """The chosen code is a true nearest code up to fp32 rounding; where the runner-up is further
    than that rounding (at least ``min_clear`` of the rows), it is exactly the float64 argmin;
    distances match float64."""
    index = index.cpu()
    assert index.dtype == torch.int64 and index.shape == (z.shape[0],)
    if z.shape[0] == 0:
        return
    d64 = _fp64_distances(z, codebook, metric)
    scale = 1.0 if metric == "cosine" else (z.double() ** 2).sum(1).cpu() + (codebook.double() ** 2).sum(1).max().cpu()
    tol = 2e-7 * (z.shape[1] + 8) * scale
    assert ((index >= 0) & (index < codebook.shape[0])).all()
    chosen = d64.gather(1, index[:, None])[:, 0]
    best = d64.min(1).values
    assert (chosen <= best + tol).all(), "a chosen code is not among the nearest"
    if codebook.shape[0] > 1:
        runner_up = d64.topk(2, dim=1, largest=False).values[:, 1]
        clear = (runner_up - best) > 2 * tol
        assert clear.float().mean() >= min_clear, "test data too tie-prone to check indices"
        assert torch.equal(index[clear], d64.argmin(1)[clear])
    if distance is not None:
        assert distance.dtype == torch.float32
        assert ((distance.cpu().double() - chosen).abs() <= tol).all()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_float64_brute_force(path, shape, dtype):
    n, k, d = shape
    z = torch.randn(n, d).to(path.device, dtype)
    codebook = torch.randn(k, d).to(path.device, dtype)
    index, distance = kernels.nearest_code(z, codebook, return_distance=True)
    assert_nearest(z, codebook, index, distance=distance)
    assert torch.equal(kernels.nearest_code(z, codebook).cpu(), index.cpu())


@pytest.mark.parametrize("shape", [(1, 1, 1), (129, 130, 8), (300, 1031, 12), (65, 300, 100)], ids=str)
def test_matches_reference(path, shape):
    n, k, d = shape
    z, codebook = torch.randn(n, d, device=path.device), torch.randn(k, d, device=path.device)
    index, distance = kernels.nearest_code(z, codebook, return_distance=True)
    ref_index, ref_distance = reference.nearest_code(z, codebook, return_distance=True)
    # Same fp32 expansion on both sides: indices agree except on fp32 near-ties.
    assert (index == ref_index).float().mean() > 0.99
    torch.testing.assert_close(distance, ref_distance, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 3), (129, 130, 8), (300, 1031, 12), (65, 300, 100)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cosine(path, shape, dtype):
    n, k, d = shape
    z = (torch.randn(n, d) * 5).to(path.device, dtype)
    codebook = (torch.rand(k, d) * torch.randn(k, d)).to(path.device, dtype)
    index, distance = kernels.nearest_code(z, codebook, metric="cosine", return_distance=True)
    assert_nearest(z, codebook, index, metric="cosine", distance=distance)


def _integer_data(n, k, d, device, dtype, copies):
    """Small integers make every fp32 sum exact, so exact ties are real ties on every path."""
    z = torch.randint(-3, 4, (n, d)).to(device, dtype)
    base = torch.randint(-3, 4, (k, d))
    codebook = base.repeat(copies, 1).to(device, dtype)  # code j repeats at j + k, j + 2k, ...
    return z, codebook


# (1, 9, 4, 1200): one row against 10,800 codes, faiss's split of the codebook over threads;
# (20, 30, 600, 7): 210 wide codes, several L2-sized codebook chunks of the compiled kernel;
# (40, 700, 6, 7): 4,900 codes, tracked by block there (ties recovered by recomputation).
TIE_CASES = [
    (50, 7, 3, 3), (200, 45, 8, 4), (130, 100, 70, 2), (64, 1, 5, 300), (1, 9, 4, 1200), (3, 16, 16, 5),
    (20, 30, 600, 7), (40, 700, 6, 7),
]  # fmt: skip


@pytest.mark.parametrize("n, k, d, copies", TIE_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_exact_ties_go_to_lowest_index(path, n, k, d, copies, dtype):
    z, codebook = _integer_data(n, k, d, path.device, dtype, copies)
    expected = _fp64_distances(z, codebook, "l2").argmin(1)  # first minimum
    index = kernels.nearest_code(z, codebook)
    assert torch.equal(index.cpu(), expected)
    assert (index < k).all()  # never a later copy


def test_ties_across_codebook_slices(path):
    if path.backend != "triton":
        pytest.skip("codebook slices exist only on the Triton path")
    from kernels.triton_impl.nearest_code import nearest_code_triton

    z, codebook = _integer_data(300, 150, 6, path.device, torch.float32, 5)
    expected = _fp64_distances(z, codebook, "l2").argmin(1)
    for split in (1, 2, 3, 6):
        index, distance = nearest_code_triton(z, codebook, cosine=False, return_distance=True, split=split)
        assert torch.equal(index.cpu(), expected), f"split={split}"
        assert_nearest(z, codebook, index, distance=distance, min_clear=0.0)


def test_cosine_ties_between_scaled_copies(path):
    # The 16 sign vectors of {-1, 1}^4 have norm 2, so they and their power-of-two multiples all
    # normalise to exactly +-0.5 entries: every dot product is exact and the copies tie exactly.
    signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 4)
    codebook = torch.cat([signs, 2.0 * signs, 0.25 * signs]).to(path.device)
    which = torch.randint(0, 16, (100,))
    z = (signs[which] * 2.0 ** torch.randint(-2, 3, (100, 1))).to(path.device)
    index, distance = kernels.nearest_code(z, codebook, metric="cosine", return_distance=True)
    assert torch.equal(index.cpu(), which)
    assert (distance == 0).all()


def test_cosine_with_zero_vectors(path):
    # F.normalize leaves a zero vector at zero (its norm is clamped at 1e-12): a zero code is at distance 1
    # from every unit row and at 0 from the zero row, which is at distance 1 from every other code.
    z, codebook = torch.randn(20, 6, device=path.device), torch.randn(30, 6, device=path.device)
    z[3], codebook[7] = 0.0, 0.0
    index, distance = kernels.nearest_code(z, codebook, metric="cosine", return_distance=True)
    assert (index >= 0).all() and not distance.isnan().any()
    assert index[3].item() == 7 and abs(distance[3].item()) < 1e-6
    assert_nearest(z, codebook, index, metric="cosine", distance=distance, min_clear=0.0)


def test_all_codes_equal(path):
    codebook = torch.ones(300, 4, device=path.device)
    z = torch.randint(-9, 10, (33, 4)).float().to(path.device)
    assert (kernels.nearest_code(z, codebook) == 0).all()


def test_large_codebook(path):
    z = torch.randn(3, 2, device=path.device)
    codebook = torch.randn(1 << 18, 2, device=path.device)
    index, distance = kernels.nearest_code(z, codebook, return_distance=True)
    assert_nearest(z, codebook, index, distance=distance, min_clear=0.0)


def test_non_finite_rows(path):
    z = torch.randn(40, 5, device=path.device)
    codebook = torch.randn(70, 5, device=path.device)
    clean_index, clean_distance = kernels.nearest_code(z, codebook, return_distance=True)
    bad_rows = torch.tensor([0, 3, 17, 39])
    z[0, 1], z[3, 0], z[17, 4], z[39] = float("nan"), float("inf"), -float("inf"), float("nan")
    index, distance = kernels.nearest_code(z, codebook, return_distance=True)
    good = torch.ones(40, dtype=torch.bool)
    good[bad_rows] = False
    assert (index.cpu()[bad_rows] == -1).all()
    assert distance.cpu()[bad_rows].isnan().all()
    assert torch.equal(index[good.to(path.device)], clean_index[good.to(path.device)])
    assert torch.equal(distance[good.to(path.device)], clean_distance[good.to(path.device)])
    assert torch.equal(kernels.nearest_code(z, codebook, metric="cosine").cpu()[bad_rows], torch.full((4,), -1))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_fp64_rows_that_overflow_fp32_are_non_finite(path, metric):
    # 1e39 is finite in fp64 but inf once narrowed to the fp32 the search runs in: no nearest code.
    z = torch.randn(6, 4, dtype=torch.float64)
    z[1, 2], z[4] = 1e39, -1e39
    codebook = torch.randn(9, 4, dtype=torch.float64)
    index, distance = kernels.nearest_code(
        z.to(path.device), codebook.to(path.device), metric=metric, return_distance=True
    )
    index, distance = index.cpu(), distance.cpu()
    assert (index[[1, 4]] == -1).all() and distance[[1, 4]].isnan().all()
    good = [0, 2, 3, 5]
    assert_nearest(z[good].float(), codebook.float(), index[good], metric=metric, distance=distance[good])


def test_finite_rows_whose_distance_overflows(path):
    # ||z||^2 overflows fp32 but ||e||^2 - 2<z, e> does not: still a finite row with a nearest code.
    z = torch.randn(6, 4)
    z[2] = 3e19
    codebook = torch.randn(9, 4)
    index, distance = kernels.nearest_code(z.to(path.device), codebook.to(path.device), return_distance=True)
    assert torch.equal(index.cpu(), reference.nearest_code(z, codebook))
    assert distance[2].item() == float("inf")


def test_mixed_input_dtypes(path):
    z = torch.randn(50, 9, device=path.device, dtype=torch.float16)
    codebook = torch.randn(60, 9, device=path.device)
    assert_nearest(z, codebook, kernels.nearest_code(z, codebook))


@pytest.mark.parametrize("budget", [4 * 64, 4 * 64 * 3, 4 * 200 * 64, 1 << 30])
def test_cpu_blocks_do_not_change_results(monkeypatch, budget):
    z, codebook = torch.randn(301, 7), torch.randn(1000, 7)
    expected = nearest_code_module.nearest_code_torch(z, codebook, cosine=False, return_distance=True)
    monkeypatch.setattr(nearest_code_module, "CPU_BLOCK_BYTES", budget)
    index, distance = nearest_code_module.nearest_code_torch(z, codebook, cosine=False, return_distance=True)
    assert torch.equal(index, expected[0])
    # matmul rounding may differ in the last bit with the block shape
    torch.testing.assert_close(distance, expected[1], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_deterministic(path, metric):
    z, codebook = torch.randn(500, 8, device=path.device), torch.randn(700, 8, device=path.device)
    first = kernels.nearest_code(z, codebook, metric=metric, return_distance=True)
    for _ in range(2):
        again = kernels.nearest_code(z, codebook, metric=metric, return_distance=True)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    if path.backend in ("native", "faiss"):  # rows are independent: any split of the batch gives the same bits
        part = kernels.nearest_code(z[123:321], codebook, metric=metric, return_distance=True)
        assert torch.equal(part[0], first[0][123:321]) and torch.equal(part[1], first[1][123:321])


@pytest.mark.parametrize("threads", [1, 3])
def test_results_do_not_depend_on_the_number_of_threads(path, threads):
    if path.backend not in ("native", "faiss"):
        pytest.skip("the compiled kernel and faiss promise it (one thread per row); BLAS may split sums")
    z, codebook = torch.randn(1000, 24, device=path.device), torch.randn(3000, 24, device=path.device)
    expected = kernels.nearest_code(z, codebook, return_distance=True)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = kernels.nearest_code(z, codebook, return_distance=True)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def _nearest_on_two_threads(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    torch.set_num_threads(2)
    return kernels.nearest_code(z, codebook)


@pytest.mark.skipif(not _dispatch.HAS_CPU_KERNELS or _dispatch.interpreting(), reason="needs the compiled kernel")
def test_compiled_kernel_runs_in_a_forked_child(monkeypatch):
    # Its worker threads persist between calls; a child forked after a call (a DataLoader worker) has
    # none of them and must start its own instead of waiting for the parent's.
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "native")
    z, codebook = torch.randn(2000, 8), torch.randn(500, 8)
    expected = _nearest_on_two_threads(z, codebook)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_nearest_on_two_threads, (z, codebook)).get(timeout=120)
    assert torch.equal(got, expected)


CPU_PATH_FUNCTIONS = ("nearest_code_torch", "nearest_code_cpu", "nearest_code_faiss")


def _spy_on_cpu_paths(monkeypatch) -> list[str]:
    """Record, in call order, which CPU path (one of ``CPU_PATH_FUNCTIONS``) runs."""
    modules = [nearest_code_module]
    if _dispatch.HAS_CPU_KERNELS:
        modules.append(importlib.import_module("kernels.cpu_impl.nearest_code"))
    if _dispatch.HAS_FAISS:
        modules.append(importlib.import_module("kernels.faiss_impl.nearest_code"))
    taken = []
    for module in modules:
        for name in CPU_PATH_FUNCTIONS:
            if hasattr(module, name):
                real = getattr(module, name)
                spy = lambda *a, _real=real, _name=name, **k: taken.append(_name) or _real(*a, **k)
                monkeypatch.setattr(module, name, spy)
    return taken


not_interpreting = pytest.mark.skipif(_dispatch.interpreting(), reason="the interpreter runs Triton on CPU")


@not_interpreting
@pytest.mark.parametrize("d", [4, 64, 256])
def test_cpu_dispatch_takes_the_fastest_available_path_at_every_width(monkeypatch, d):
    monkeypatch.delenv(_dispatch.BACKEND_ENV, raising=False)
    taken = _spy_on_cpu_paths(monkeypatch)
    z, codebook = torch.randn(65, d), torch.randn(40, d)
    kernels.nearest_code(z, codebook)
    kernels.nearest_code(z[:1], codebook)
    fastest = "cpu" if _dispatch.HAS_CPU_KERNELS else ("faiss" if _dispatch.HAS_FAISS else "torch")
    assert taken == [f"nearest_code_{fastest}"] * 2


CPU_SIDES = [
    pytest.param("native", "cpu", marks=pytest.mark.skipif(not _dispatch.HAS_CPU_KERNELS, reason="not built here")),
    pytest.param("faiss", "faiss", marks=pytest.mark.skipif(not _dispatch.HAS_FAISS, reason="pip install faiss-cpu")),
    pytest.param("torch", "torch"),
]


@not_interpreting
@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("side, function", CPU_SIDES)
def test_every_cpu_path_keeps_the_contract(monkeypatch, metric, side, function):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, side)
    taken = _spy_on_cpu_paths(monkeypatch)
    z = torch.randn(301, 16).to(torch.float16)
    z[5, 3], z[90] = float("nan"), float("inf")
    codebook = torch.randn(257, 16).to(torch.bfloat16)
    index, distance = kernels.nearest_code(z, codebook, metric=metric, return_distance=True)
    assert taken == [f"nearest_code_{function}"]
    assert (index[[5, 90]] == -1).all() and distance[[5, 90]].isnan().all()
    good = torch.ones(301, dtype=torch.bool)
    good[[5, 90]] = False
    assert_nearest(z[good], codebook, index[good], metric=metric, distance=distance[good])
    assert torch.equal(kernels.nearest_code(z, codebook, metric=metric), index)  # deterministic


def test_faiss_restores_its_global_threshold():
    faiss = pytest.importorskip("faiss", reason="pip install faiss-cpu")
    from kernels.faiss_impl.nearest_code import nearest_code_faiss

    before = faiss.cvar.distance_compute_blas_threshold
    nearest_code_faiss(torch.randn(9, 4), torch.randn(20, 4), cosine=False, return_distance=False)
    assert faiss.cvar.distance_compute_blas_threshold == before


class TestBadInput:
    def test_rank(self):
        with pytest.raises(ValueError, match="z must have 2 dimensions"):
            kernels.nearest_code(torch.randn(4), torch.randn(3, 4))
        with pytest.raises(ValueError, match="codebook must have 2 dimensions"):
            kernels.nearest_code(torch.randn(2, 4), torch.randn(3, 4, 1))

    def test_mismatched_dim(self):
        with pytest.raises(ValueError, match="z has D=4 but codebook has D=5"):
            kernels.nearest_code(torch.randn(2, 4), torch.randn(3, 5))

    def test_integer_dtype(self):
        with pytest.raises(TypeError, match="z must be a floating tensor"):
            kernels.nearest_code(torch.ones(2, 4, dtype=torch.int64), torch.randn(3, 4))
        with pytest.raises(TypeError, match="codebook must be a floating tensor"):
            kernels.nearest_code(torch.randn(2, 4), torch.ones(3, 4, dtype=torch.int32))

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match="codebook must be a torch.Tensor"):
            kernels.nearest_code(torch.randn(2, 4), [[1.0] * 4])

    def test_empty_codebook(self):
        with pytest.raises(ValueError, match="K >= 1"):
            kernels.nearest_code(torch.randn(2, 4), torch.randn(0, 4))

    def test_zero_channels(self):
        with pytest.raises(ValueError, match="D >= 1"):
            kernels.nearest_code(torch.randn(2, 0), torch.randn(3, 0))

    def test_metric(self):
        with pytest.raises(ValueError, match="metric must be one of"):
            kernels.nearest_code(torch.randn(2, 4), torch.randn(3, 4), metric="l1")

    def test_devices(self):
        with pytest.raises(ValueError, match="z on cpu, codebook on meta"):
            kernels.nearest_code(torch.randn(2, 4), torch.randn(3, 4, device="meta"))
