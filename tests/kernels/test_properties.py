"""Hypothesis property tests of the kernels (skipped where hypothesis is not installed, e.g. the
GPU image)."""

from __future__ import annotations

import pytest
import torch

import kernels

from .test_nearest_code import _fp64_distances

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), k=st.integers(1, 300), d=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_property_integer_data_is_exact(path, n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(-4, 5, (n, d), generator=g).float().to(path.device)
    codebook = torch.randint(-4, 5, (k, d), generator=g).float().to(path.device)
    index, distance = kernels.nearest_code(z, codebook, return_distance=True)
    d64 = _fp64_distances(z, codebook, "l2")
    assert torch.equal(index.cpu(), d64.argmin(1))
    assert torch.equal(distance.cpu().double(), d64.min(1).values)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels=st.lists(st.integers(2, 9), min_size=1, max_size=6), rows=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_property_indices_invert_codes(path, levels, rows, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(rows, len(levels), generator=g) * 3).to(path.device)
    codes, indices = kernels.fsq_quantize(z, levels)
    assert torch.equal(kernels.fsq_indices_to_codes(indices, levels), codes)
