"""Every Triton launch runs on its tensors' CUDA device, not the current one (``_dispatch.device_guard``)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import pytest
import torch

import kernels
from kernels import _dispatch, reference

pytest.importorskip("triton")

from kernels import triton_impl
from kernels.fsq import fsq_constants
from kernels.triton_impl.ema_update import codebook_stats_triton
from kernels.triton_impl.fsq import FSQTritonFunction
from kernels.triton_impl.nearest_code import nearest_code_triton

LAUNCHER_MODULES = [
    importlib.import_module(f"{triton_impl.__name__}.{m.name}") for m in pkgutil.iter_modules(triton_impl.__path__)
]


def test_guard_makes_no_cuda_call_for_cpu_tensors(monkeypatch):
    def no_cuda(*_args, **_kwargs):
        raise AssertionError("device_guard touched CUDA for a CPU tensor")

    monkeypatch.setattr(torch.cuda, "device", no_cuda)
    with _dispatch.device_guard(torch.zeros(2)):
        pass


class _RecordingKernel:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args)`` records the guard active at launch."""

    def __init__(self, name: str, guarded: list[torch.device], launches: dict[str, list]) -> None:
        self.name, self.guarded, self.launches = name, guarded, launches

    def __getitem__(self, _grid):
        def launch(*args, **_kwargs) -> None:
            devices = {a.device for a in args if isinstance(a, torch.Tensor)}
            self.launches.setdefault(self.name, []).append((list(self.guarded), devices))

        return launch


def test_every_launch_runs_inside_the_guard_of_its_tensors(monkeypatch):
    """Every ``*_kernel`` of ``kernels.triton_impl`` is launched, and only inside ``device_guard`` of a
    tensor on the launch's device. A new kernel fails here until its launcher is guarded and called below."""
    guarded: list[torch.device] = []
    launches: dict[str, list] = {}

    @contextlib.contextmanager
    def recording_guard(t: torch.Tensor):
        guarded.append(t.device)
        try:
            yield
        finally:
            guarded.pop()

    kernel_names = set()
    for module in LAUNCHER_MODULES:
        monkeypatch.setattr(module, "device_guard", recording_guard)
        for name in vars(module).copy():
            if name.endswith("_kernel"):
                kernel_names.add(name)
                monkeypatch.setattr(module, name, _RecordingKernel(name, guarded, launches))

    z = torch.randn(7, 3, requires_grad=True)
    nearest_code_triton(z.detach(), torch.randn(5, 3), cosine=False, return_distance=True)
    codebook_stats_triton(z.detach(), torch.tensor([0, 1, 2, 3, 4, 0, 1]), 5)
    codes, _ = FSQTritonFunction.apply(z, fsq_constants((5, 5, 5), z.device))
    codes.sum().backward()

    assert kernel_names and set(launches) == kernel_names
    for name, calls in launches.items():
        for guard_devices, tensor_devices in calls:
            assert guard_devices == [torch.device("cpu")] and tensor_devices == {torch.device("cpu")}, name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_launch_on_a_device_that_is_not_current(monkeypatch):
    monkeypatch.setenv(_dispatch.BACKEND_ENV, "triton")
    z, codebook = torch.randn(300, 8), torch.randn(70, 8)
    levels, upstream = (8, 5, 5), torch.randn(300, 3)
    other = torch.device("cuda", 1)
    with torch.cuda.device(0):
        index, distance = kernels.nearest_code(z.to(other), codebook.to(other), return_distance=True)
        counts, sums = kernels.codebook_stats(z.to(other), index, 70)
        z_fsq = z[:, :3].to(other).requires_grad_()
        codes, fsq_index = kernels.fsq_quantize(z_fsq, levels)
        (codes * upstream.to(other)).sum().backward()
        torch.cuda.synchronize(other)
    assert torch.cuda.current_device() == 0 and index.device == other

    _, ref_distance = reference.nearest_code(z, codebook, return_distance=True)
    torch.testing.assert_close(distance.cpu(), ref_distance, rtol=1e-5, atol=1e-4)  # near ties: the distance
    ref_counts, ref_sums = reference.codebook_stats(z, index.cpu(), 70)
    torch.testing.assert_close(counts.cpu(), ref_counts, rtol=0, atol=0)
    torch.testing.assert_close(sums.cpu(), ref_sums, rtol=1e-5, atol=1e-5)
    z_ref = z[:, :3].clone().requires_grad_()
    ref_codes, ref_index = reference.fsq_quantize(z_ref, levels)
    (ref_codes * upstream).sum().backward()
    bounded = reference.fsq_bound(z_ref.detach(), levels)  # Triton's tanh may round the other way within 1e-5
    exact = ((bounded - bounded.floor() - 0.5).abs() > 1e-5).all(-1)
    assert torch.equal(codes.detach().cpu()[exact], ref_codes.detach()[exact])
    assert torch.equal(fsq_index.cpu()[exact], ref_index[exact])
    torch.testing.assert_close(z_fsq.grad.cpu(), z_ref.grad, rtol=1e-5, atol=1e-6)
