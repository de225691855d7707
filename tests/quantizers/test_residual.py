"""ResidualQuantizer over VQ and FSQ: depth axis, error falling with depth, dropout, sharing."""

from __future__ import annotations

import pytest
import torch

from tokenizer.quantizers import FSQConfig, ResidualConfig, ResidualQuantizer, VQConfig


def _error_by_depth(config_for_depth, x, train_steps=1):
    errors = []
    for depth in (1, 2, 4):
        torch.manual_seed(0)
        rq = ResidualQuantizer(config_for_depth(depth))
        for _ in range(train_steps):
            rq(x)  # k-means init and EMA for VQ depths
        rq.eval()
        errors.append(float(((rq(x).quantized - x) ** 2).mean()))
    return errors


def test_vq_error_falls_with_depth():
    x = torch.randn(4, 8, 8, 8)
    errors = _error_by_depth(lambda m: ResidualConfig(VQConfig(codebook_size=64, dim=8), depth=m), x)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.6 * errors[0]


def test_fsq_error_falls_with_depth():
    x = torch.randn(4, 4, 8, 8) * 0.5
    errors = _error_by_depth(lambda m: ResidualConfig(FSQConfig(levels=(7, 7, 7, 7)), depth=m), x)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.3 * errors[0]


@pytest.mark.parametrize(
    "config",
    [
        ResidualConfig(VQConfig(codebook_size=32, dim=6), depth=3),
        ResidualConfig(VQConfig(codebook_size=32, dim=6, codebook_dim=3), depth=2, shared_codebook=True),
        ResidualConfig(FSQConfig(levels=(8, 5, 5), dim=6), depth=3),
    ],
    ids=["vq", "vq-shared-lowdim", "fsq-projected"],
)
@pytest.mark.parametrize("shape", [(2, 6, 4, 5), (1, 6, 3, 2, 2)], ids=str)
def test_contract_and_round_trip(config, shape):
    rq = ResidualQuantizer(config)
    x = torch.randn(*shape, requires_grad=True)
    out = rq(x)
    assert out.quantized.shape == x.shape
    assert out.indices.shape == (shape[0], *shape[2:], config.depth)
    (out.quantized.sum() + out.loss).backward()
    assert x.grad.abs().sum() > 0
    rq.eval()
    out = rq(x.detach())
    torch.testing.assert_close(rq.indices_to_codes(out.indices), out.quantized, rtol=1e-5, atol=1e-5)


def test_codes_are_the_sum_over_depths():
    rq = ResidualQuantizer(ResidualConfig(VQConfig(codebook_size=16, dim=3, kmeans_init=False), depth=3)).eval()
    out = rq(torch.randn(1, 3, 4, 4))
    total = sum(rq.layer(m).indices_to_codes(out.indices[..., m]) for m in range(3))
    torch.testing.assert_close(out.quantized, total)


def test_shared_codebook_is_one_module():
    rq = ResidualQuantizer(ResidualConfig(VQConfig(codebook_size=16, dim=3), depth=4, shared_codebook=True))
    assert len(rq.layers) == 1 and rq.layer(3) is rq.layer(0)
    assert sum(1 for name in rq.state_dict() if name.endswith("codebook")) == 1


def test_quantize_dropout_truncates_depth_in_training_only():
    rq = ResidualQuantizer(ResidualConfig(FSQConfig(levels=(5, 5, 5)), depth=4, quantize_dropout=1.0))
    x = torch.randn(2, 3, 4, 4)
    depths = set()
    for _ in range(30):
        out = rq(x)
        active = int(out.metrics["active_depth"])
        depths.add(active)
        assert (out.indices[..., active:] == -1).all() and (out.indices[..., :active] >= 0).all()
        torch.testing.assert_close(rq.indices_to_codes(out.indices), out.quantized)
    assert depths == {1, 2, 3, 4}
    rq.eval()
    assert (rq(x).indices >= 0).all()


def test_quantize_dropout_depths_follow_the_global_seed():
    rq = ResidualQuantizer(ResidualConfig(FSQConfig(levels=(5, 5, 5)), depth=4, quantize_dropout=0.5))
    x = torch.randn(1, 3, 2, 2)

    def depths(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return [int(rq(x).metrics["active_depth"]) for _ in range(16)]

    first = depths(3)
    assert depths(3) == first
    assert depths(4) != first and len(set(first)) > 1


class TestBadConfig:
    def test_depth(self):
        with pytest.raises(ValueError, match="depth must be at least 1"):
            ResidualConfig(VQConfig(codebook_size=8, dim=2), depth=0)

    def test_dropout(self):
        with pytest.raises(ValueError, match="quantize_dropout must lie in"):
            ResidualConfig(VQConfig(codebook_size=8, dim=2), quantize_dropout=2.0)

    def test_shared_fsq(self):
        with pytest.raises(ValueError, match="shared_codebook applies to VQ depths only"):
            ResidualConfig(FSQConfig(levels=(5, 5)), shared_codebook=True)

    def test_inner_type(self):
        with pytest.raises(TypeError, match="quantizer must be a VQConfig or FSQConfig"):
            ResidualQuantizer(ResidualConfig(quantizer="vq"))

    def test_indices_depth(self):
        rq = ResidualQuantizer(ResidualConfig(FSQConfig(levels=(5, 5)), depth=3))
        with pytest.raises(ValueError, match="depth axis of 3"):
            rq.indices_to_codes(torch.zeros(1, 2, 2, 2, dtype=torch.long))
