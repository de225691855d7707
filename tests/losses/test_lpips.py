"""LPIPS: metric properties, a float64 reference written with torch.nn.functional, file loading in the
torchvision / lpips layouts, error messages, and the no-weights refusal."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tokenizer.losses import LPIPS, build_perceptual

# VGG16 conv indices in torchvision's ``features``, grouped by the pool that precedes each group.
CONV_GROUPS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]


def reference_lpips(state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS in float64 from the paper's definition, straight from the weights: ``[B]``."""
    state = {k: v.double() for k, v in state.items()}
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
    hx, hy = ((v.double() - shift) / scale for v in (x, y))
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for level, group in enumerate(CONV_GROUPS):
        if level:
            hx, hy = F.max_pool2d(hx, 2), F.max_pool2d(hy, 2)
        for i in group:
            w, b = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
            hx, hy = F.relu(F.conv2d(hx, w, b, padding=1)), F.relu(F.conv2d(hy, w, b, padding=1))
        nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        head = state[f"lin{level}.model.1.weight"].view(1, -1, 1, 1)
        total += ((nx - ny).pow(2) * head).sum(1).mean(dim=(1, 2))
    return total


def pixels(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) * 2 - 1


def test_matches_float64_reference(lpips_net):
    x, y = pixels(2, 3, 16, 24), pixels(2, 3, 16, 24)
    expected = reference_lpips(lpips_net.state_dict(), x, y)
    assert (expected > 0).all()
    torch.testing.assert_close(lpips_net(x, y).double(), expected, rtol=1e-5, atol=1e-8)
    net64 = copy.deepcopy(lpips_net).double()
    torch.testing.assert_close(net64(x.double(), y.double()), expected, rtol=1e-8, atol=1e-12)


def test_metric_properties_and_frozen(lpips_net):
    x, y = pixels(2, 3, 16, 32), pixels(2, 3, 16, 32)
    d = lpips_net(x, y)
    assert d.shape == (2,)
    assert torch.equal(lpips_net(x, x), torch.zeros(2))
    assert (d > 0).all()
    torch.testing.assert_close(lpips_net(y, x), d)
    assert not any(p.requires_grad for p in lpips_net.parameters())
    lpips_net.train()
    assert not lpips_net.training  # a fixed metric stays in eval mode


def test_gradient_reaches_inputs(lpips_net):
    x = pixels(1, 3, 16, 16).requires_grad_()
    lpips_net(x, pixels(1, 3, 16, 16)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips_net.parameters())


def test_video_folds_frames(lpips_net):
    x, y = pixels(1, 3, 2, 16, 16), pixels(1, 3, 2, 16, 16)
    per_frame = torch.stack([lpips_net(x[:, :, t], y[:, :, t]) for t in range(2)], dim=1)
    torch.testing.assert_close(lpips_net(x, y), per_frame.mean(dim=1))


def test_input_errors(lpips_net):
    with pytest.raises(ValueError, match="same shape"):
        lpips_net(pixels(1, 3, 16, 16), pixels(1, 3, 16, 17))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        lpips_net(pixels(1, 1, 16, 16), pixels(1, 1, 16, 16))
    with pytest.raises(ValueError, match=">= 16"):
        lpips_net(pixels(1, 3, 8, 32), pixels(1, 3, 8, 32))


def test_from_files_gives_same_output(lpips_net, lpips_files):
    x, y = pixels(2, 3, 16, 16), pixels(2, 3, 16, 16)
    loaded = LPIPS.from_files(*lpips_files)
    assert torch.equal(loaded(x, y), lpips_net(x, y))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_from_safetensors(lpips_net, lpips_files, tmp_path):
    state = torch.load(lpips_files[0], weights_only=True)
    save_file({k: v.half() for k, v in state.items()}, tmp_path / "vgg16.safetensors")  # fp16 file, fp32 module
    loaded = LPIPS.from_files(tmp_path / "vgg16.safetensors", lpips_files[1])
    assert loaded.features[0].weight.dtype == torch.float32
    torch.testing.assert_close(loaded.features[0].weight, lpips_net.features[0].weight.half().float())


def test_bad_files_name_file_and_keys(lpips_files, tmp_path):
    vgg_path, lin_path = lpips_files
    vgg = torch.load(vgg_path, weights_only=True)
    del vgg["features.28.weight"]
    vgg["features.99.weight"] = torch.zeros(1)
    vgg["features.5.bias"] = torch.zeros(7)
    bad = tmp_path / "bad_vgg.pth"
    torch.save(vgg, bad)
    with pytest.raises(ValueError) as info:
        LPIPS.from_files(bad, lin_path)
    message = str(info.value)
    for part in ["bad_vgg.pth", "missing keys ['features.28.weight']", "unexpected keys ['features.99.weight']"]:
        assert part in message
    assert "features.5.bias: file (7,), expected (128,)" in message
    assert "classifier" not in message

    lin = torch.load(lin_path, weights_only=True)
    lin["lin2.model.1.weight"] = -lin["lin2.model.1.weight"]
    negative = tmp_path / "neg_lin.pth"
    torch.save(lin, negative)
    with pytest.raises(ValueError, match=r"neg_lin\.pth.*lin2\.model\.1\.weight.*non-negative|non-negative.*lin2"):
        LPIPS.from_files(vgg_path, negative)

    with pytest.raises(ValueError, match="missing keys"):
        LPIPS.from_files(lin_path, lin_path)  # the heads file given as the VGG file
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        LPIPS.from_files(tmp_path / "nowhere.pth", lin_path)


def test_no_silent_random_network(lpips_files):
    with pytest.raises(TypeError):
        LPIPS()  # weights are required; only LPIPS.random_init makes a random one
    assert build_perceptual(None, None, 0.0) is None
    assert build_perceptual(*lpips_files, 0.0) is None
    with pytest.raises(ValueError) as info:
        build_perceptual(None, lpips_files[1], 1.0)
    message = str(info.value)
    for part in ["vgg16-397923af.pth", "lpips/weights/v0.1/vgg.pth", "vgg_path", "lin_path", "perceptual_weight=0"]:
        assert part in message
    with pytest.raises(ValueError, match=">= 0"):
        build_perceptual(None, None, -1.0)
    assert isinstance(build_perceptual(*lpips_files, 0.5), LPIPS)
