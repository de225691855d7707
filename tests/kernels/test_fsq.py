"""fsq_quantize / fsq_indices_to_codes on every runnable path against kernels.reference."""

from __future__ import annotations

import math

import pytest
import torch

import kernels
from kernels import _dispatch, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LEVEL_SETS = [(8, 5, 5, 5), (8, 8, 8, 6, 5), (4, 4, 4), (7, 5, 5, 5, 5), (2, 3, 4, 5), (2, 2), (3,), (16, 16)]
SHAPES = [(0,), (1,), (1000,), (3, 5, 7)]  # leading dims; 1000 rows is not a multiple of the 256-row block


def _grid_input(levels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """An input that lands on every code of the implicit codebook: z = atanh((q + offset)/half) - shift."""
    all_indices = torch.arange(math.prod(levels))
    codes = reference.fsq_indices_to_codes(all_indices, levels).double()
    lv = torch.tensor(levels, dtype=torch.float64)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    q = codes * (lv // 2)
    z = torch.atanh((q + offset) / half) - torch.atanh(offset / half)
    return z.float().to(device), all_indices


def _near_rounding_boundary(z, levels, slack):
    """Positions whose bounded value lies within ``slack`` of a .5 rounding boundary."""
    bounded = reference.fsq_bound(z.cpu(), levels)
    return ((bounded - bounded.floor() - 0.5).abs() < slack).any(-1)


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
@pytest.mark.parametrize("lead", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_matches_reference(path, levels, lead, dtype):
    z = (torch.randn(*lead, len(levels)) * 2).to(path.device, dtype)
    codes, indices = kernels.fsq_quantize(z, levels)
    ref_codes, ref_indices = reference.fsq_quantize(z, levels)
    assert codes.dtype == torch.float32 and codes.shape == z.shape
    assert indices.dtype == torch.int64 and indices.shape == z.shape[:-1]
    # The Triton tanh is computed from exp and may differ from torch.tanh in the last bits, so a
    # value within 1e-5 of a rounding boundary may round the other way there; nowhere else.
    slack = 1e-5 if path.backend == "triton" else 0.0
    exact = ~_near_rounding_boundary(z, levels, slack).to(path.device)
    assert exact.float().mean() > 0.99 if exact.numel() else True
    assert torch.equal(codes[exact], ref_codes[exact])
    assert torch.equal(indices[exact], ref_indices[exact])


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
def test_codes_lie_on_the_grid(path, levels):
    z = torch.randn(2000, len(levels), device=path.device) * 3
    codes, indices = kernels.fsq_quantize(z, levels)
    half_width = torch.tensor([lv // 2 for lv in levels], device=path.device)
    steps = codes * half_width
    assert torch.equal(steps, steps.round())
    low = -half_width
    high = half_width - torch.tensor([1 - lv % 2 for lv in levels], device=path.device)
    assert ((steps >= low) & (steps <= high)).all()
    assert ((indices >= 0) & (indices < math.prod(levels))).all()
    assert codes.abs().max() <= 1.0


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
def test_every_code_round_trips(path, levels):
    z, all_indices = _grid_input(levels, path.device)
    codes, indices = kernels.fsq_quantize(z, levels)
    assert torch.equal(indices.cpu(), all_indices)
    assert torch.equal(kernels.fsq_indices_to_codes(indices, levels), codes)
    assert torch.equal(
        kernels.fsq_indices_to_codes(indices, levels).cpu(), reference.fsq_indices_to_codes(all_indices, levels)
    )


@pytest.mark.parametrize("levels", LEVEL_SETS[:5], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_straight_through_gradient_is_the_bound_gradient(path, levels, dtype):
    z = (torch.randn(301, len(levels)) * 2).to(path.device, dtype).requires_grad_()
    upstream = torch.randn(301, len(levels), device=path.device)
    codes, _ = kernels.fsq_quantize(z, levels)
    (grad,) = torch.autograd.grad((codes * upstream).sum(), z)
    z64 = z.detach().double().cpu().requires_grad_()
    half_width = torch.tensor([lv // 2 for lv in levels], dtype=torch.float64)
    bound = _bound64(z64, levels)
    (expected,) = torch.autograd.grad((bound / half_width * upstream.double().cpu()).sum(), z64)
    assert grad.dtype == dtype and grad.shape == z.shape
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(grad.cpu().double(), expected, rtol=tol, atol=tol)
    # and it matches autograd through the reference's round_ste
    z_ref = z.detach().clone().requires_grad_()
    (ref_grad,) = torch.autograd.grad((reference.fsq_quantize(z_ref, levels)[0] * upstream).sum(), z_ref)
    torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=tol, atol=tol)


def _bound64(z64: torch.Tensor, levels) -> torch.Tensor:
    lv = torch.tensor(levels, dtype=torch.float64)
    half = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    return torch.tanh(z64 + torch.atanh(offset / half)) * half - offset


def test_bf16_input_does_not_collapse_codes(path):
    levels = (8, 8, 8, 5, 5, 5)
    z = (torch.randn(4096, len(levels)) * 1.5).to(path.device, torch.bfloat16)
    codes, indices = kernels.fsq_quantize(z, levels)
    codes32, indices32 = kernels.fsq_quantize(z.float(), levels)
    assert torch.equal(codes, codes32) and torch.equal(indices, indices32)
    assert indices.unique().numel() > 3000  # a bf16 tanh would merge neighbouring levels


def test_non_finite_input(path):
    levels = (8, 5, 5)
    z = torch.randn(6, 3, device=path.device)
    z[0] = float("inf")
    z[1] = -float("inf")
    z[2, 1] = float("nan")
    codes, indices = kernels.fsq_quantize(z, levels)
    assert torch.equal(codes[0].cpu(), torch.tensor([0.75, 1.0, 1.0]))  # highest level: even L stops at (L/2-1)/(L/2)
    assert torch.equal(codes[1].cpu(), torch.tensor([-1.0, -1.0, -1.0]))
    assert indices[0] == 8 * 5 * 5 - 1 and indices[1] == 0
    assert indices[2] == -1 and codes[2].isnan().any()
    assert (indices[3:] >= 0).all()


def test_empty_input_with_grad(path):
    z = torch.randn(0, 4, device=path.device, requires_grad=True)
    codes, indices = kernels.fsq_quantize(z, (8, 5, 5, 5))
    codes.sum().backward()
    assert codes.shape == (0, 4) and indices.shape == (0,) and z.grad.shape == (0, 4)


class TestBadInput:
    @pytest.mark.parametrize("levels", [(), (1, 5), (8, 0)], ids=str)
    def test_levels_values(self, levels):
        with pytest.raises(ValueError, match="levels"):
            kernels.fsq_quantize(torch.randn(3, max(len(levels), 1)), levels)

    def test_levels_types(self):
        with pytest.raises(TypeError, match="levels must hold ints"):
            kernels.fsq_quantize(torch.randn(3, 2), (2.5, 3))
        with pytest.raises(ValueError, match="levels must be a non-empty sequence"):
            kernels.fsq_quantize(torch.randn(3, 2), "85")

    def test_channel_mismatch(self):
        with pytest.raises(ValueError, match=r"z's last dimension must equal len\(levels\)=4"):
            kernels.fsq_quantize(torch.randn(3, 5), (8, 5, 5, 5))

    def test_integer_input(self):
        with pytest.raises(TypeError, match="z must be a floating tensor"):
            kernels.fsq_quantize(torch.zeros(3, 2, dtype=torch.int32), (5, 5))

    def test_float_indices(self):
        with pytest.raises(TypeError, match="indices must be an integer tensor"):
            kernels.fsq_indices_to_codes(torch.zeros(3), (5, 5))


def _peer_fsq_indices(z: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """FSQ as the published implementations evaluate it: every constant in fp32 arithmetic, step by step."""
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = (offset / half_l).atanh()
    q = ((z + shift).tanh() * half_l - offset).round()
    basis = torch.cumprod(torch.tensor((1, *levels[:-1])), 0)
    return ((q + lv // 2).long() * basis).sum(-1)


@pytest.mark.skipif(
    _dispatch.use_triton(torch.device("cpu")),
    reason="Triton's tanh is not torch's in the last ulp: boundaries may differ",
)
def test_values_on_rounding_boundaries_get_the_published_implementations_codes():
    # z placed within a few ulps of every rounding boundary of an even level count, where constants computed in
    # float64 and rounded once (2.4e-7 off for L = 8) flip codes; the PyTorch path evaluates what they evaluate
    levels = (8, 8, 5)
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + 1e-3) / 2
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = (offset / half_l).atanh()
    boundaries = torch.arange(-3.0, 4.0)[:, None] + 0.5  # k + 1/2 for the 8 levels' codes
    centre = torch.atanh(((boundaries + offset[0]) / half_l[0]).clamp(-0.999999, 0.999999)) - shift[0]
    steps = torch.arange(-40, 41, dtype=torch.float32) * 2e-8
    column = (centre + steps).reshape(-1)
    z = torch.stack([column, column.flip(0), torch.zeros_like(column)], dim=-1)
    _, indices = kernels.fsq_quantize(z, levels)
    assert torch.equal(indices, _peer_fsq_indices(z, levels))
