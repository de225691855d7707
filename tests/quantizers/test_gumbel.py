"""Gumbel quantizer against float64 re-computations of its formulas (the peer comparison with taming's
``GumbelQuantize`` is in tests/models/formats/test_taming_peer.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tokenizer import Tokenizer, TokenizerConfig
from tokenizer.quantizers import GumbelConfig, GumbelQuantizer, build_quantizer
from tokenizer.quantizers import gumbel as gumbel_module


def _quantizer(k: int = 7, d: int = 5, seed: int = 0, **kwargs) -> GumbelQuantizer:
    torch.manual_seed(seed)
    q = build_quantizer(GumbelConfig(codebook_size=k, dim=d, **kwargs))
    assert isinstance(q, GumbelQuantizer)
    with torch.no_grad():  # logits of order 1, so the KL term is not trivial
        q.proj.weight.normal_(0.0, 1.0 / math.sqrt(d))
        q.proj.bias.normal_(0.0, 0.5)
    return q


def _logits64(q: GumbelQuantizer, x: torch.Tensor) -> torch.Tensor:
    """Rows ``[N, K]`` of ``W z + b`` in float64, positions in row-major order over (B, *spatial)."""
    rows = x.double().movedim(1, -1).reshape(-1, x.shape[1])
    return rows @ q.proj.weight.double().T + q.proj.bias.double()


def _kl64(q: GumbelQuantizer, logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, dim=1)
    k = logits.shape[1]
    return q.config.kl_weight * (p * torch.log(p * k + 1e-10)).sum(1).mean()


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 5, 2, 3, 5)])
def test_eval_is_the_argmax_of_the_logits(shape):
    q = _quantizer(kl_weight=0.3).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = q(x)
    logits = _logits64(q, x)
    top = logits.topk(2, dim=1).values
    assert (top[:, 0] - top[:, 1]).min() > 1e-5  # no near-ties between fp32 and fp64
    expected = logits.argmax(1).reshape(shape[0], *shape[2:])
    torch.testing.assert_close(out.indices, expected, rtol=0, atol=0)
    codes = q.embed.weight[expected].movedim(-1, 1)
    torch.testing.assert_close(out.quantized, codes, rtol=0, atol=0)
    torch.testing.assert_close(q.indices_to_codes(out.indices), codes, rtol=0, atol=0)
    torch.testing.assert_close(out.loss.double(), _kl64(q, logits), rtol=1e-5, atol=1e-8)
    assert out.quantized.shape == x.shape and out.metrics["usage"] > 0
    again = q(x)  # deterministic
    torch.testing.assert_close(again.indices, out.indices, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 7, 50, 1 << 22])
def test_inference_kl_in_pieces_is_the_whole_kl(monkeypatch, chunk):
    """Without autograd the KL is summed over pieces of the logits (bounded temporaries): same value, and an
    empty input still gives NaN as the mean of nothing."""
    monkeypatch.setattr(gumbel_module, "KL_CHUNK_ELEMENTS", chunk)
    q = _quantizer(kl_weight=0.3).eval()
    x = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = q(x)
    torch.testing.assert_close(out.loss.double(), _kl64(q, _logits64(q, x)), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(out.loss, q(x).loss, rtol=1e-6, atol=0)  # as with autograd on
    with torch.no_grad():
        assert torch.isnan(q(torch.randn(2, 5, 0, 3)).loss)


def test_training_samples_softmax_and_passes_hard_gradients():
    """Gumbel-max: ``argmax(l + g)`` is distributed as ``softmax(l)``; the output is the hard code, whose
    gradient to the codebook is the one-hot assignment."""
    q = _quantizer(k=5, d=3, temperature=0.7).train()
    z = torch.randn(3, 1, 1, generator=torch.Generator().manual_seed(2))
    x = z.expand(3, 100, 200)[None].contiguous().requires_grad_(True)  # one latent at 20,000 positions
    torch.manual_seed(3)
    out = q(x)
    p = torch.softmax(_logits64(q, x[:, :, :1, :1].detach())[0], dim=0)
    freq = torch.bincount(out.indices.reshape(-1), minlength=5).double() / out.indices.numel()
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / out.indices.numel())
    codes = q.embed.weight[out.indices].movedim(-1, 1)
    torch.testing.assert_close(out.quantized, codes, rtol=0, atol=0)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    (out.quantized * weights).sum().backward()
    rows = weights.movedim(1, -1).reshape(-1, 3)
    expected = torch.zeros(5, 3, dtype=torch.float64).index_add_(0, out.indices.reshape(-1), rows.double())
    torch.testing.assert_close(q.embed.weight.grad.double(), expected, rtol=1e-4, atol=1e-4)  # fp32 sums of 2e4
    assert x.grad.abs().sum() > 0  # the soft path reaches the latents
    torch.testing.assert_close(out.loss.double(), _kl64(q, _logits64(q, x.detach())), rtol=1e-5, atol=1e-8)


def test_soft_mode_tends_to_the_hard_code_at_low_temperature():
    q = _quantizer(temperature=1e-4, straight_through=False).train()
    x = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(5))
    out = q(x)
    codes = q.embed.weight[out.indices].movedim(-1, 1)
    torch.testing.assert_close(out.quantized, codes, rtol=1e-4, atol=1e-4)
    warm = _quantizer(temperature=10.0, straight_through=False).train()
    soft = warm(x)  # a mix of codes, not one of them
    assert not torch.allclose(soft.quantized, warm.embed.weight[soft.indices].movedim(-1, 1), atol=1e-2)


def test_config_round_trip_and_tokenizer():
    config = TokenizerConfig(
        ch=32,
        ch_mult=(1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=4,
        quantizer=GumbelConfig(codebook_size=9, dim=4, kl_weight=1e-8),
        mid_attention=False,
    )
    data = config.to_dict()
    assert data["quantizer"]["kind"] == "gumbel" and data["mid_attention"] is False
    assert TokenizerConfig.from_dict(data) == config
    model = Tokenizer(config).eval()
    assert not any(".attn_1." in k for k in model.state_dict())
    x = torch.rand(1, 3, 6, 10) * 2 - 1
    indices = model.encode(x)
    assert indices.shape == (1, 3, 5) and model.codebook_size == 9
    with torch.no_grad():
        torch.testing.assert_close(model.decode(indices), model(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codebook_size": 0, "dim": 4}, "codebook_size"),
        ({"codebook_size": 4, "dim": 0}, "dim"),
        ({"codebook_size": 4, "dim": 4, "temperature": 0.0}, "temperature"),
        ({"codebook_size": 4, "dim": 4, "kl_weight": -1.0}, "kl_weight"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GumbelConfig(**kwargs)
