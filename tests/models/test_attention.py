"""Query-blocked attention (``tokenizer.models.attention``): the same result as one call, bounded scores."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokenizer.models import attention as attention_module
from tokenizer.models.attention import attention
from tokenizer.models.blocks import AttnBlock
from tokenizer.models.causal import FrameAttnBlock


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(C)) v`` written out in float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


def _record_query_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the fused call to record how many queries each call gets."""
    seen: list[int] = []
    real = F.scaled_dot_product_attention

    def recording(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        seen.append(q.shape[-2])
        return real(q, k, v)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", recording)
    return seen


@pytest.mark.parametrize(("batch", "queries", "keys", "channels"), [(1, 97, 97, 8), (3, 50, 31, 5), (2, 7, 7, 16)])
def test_blocked_matches_one_call_and_float64(monkeypatch, batch, queries, keys, channels):
    """A budget of a few score rows forces many blocks, the last one short (97 = 6 * 16 + 1, 50 = 3 * 16 + 2)."""
    generator = torch.Generator().manual_seed(queries * keys)
    q, k, v = (torch.randn(batch, 1, n, channels, generator=generator) * 2 for n in (queries, keys, keys))
    row_bytes = batch * keys * 4
    whole = F.scaled_dot_product_attention(q, k, v)
    seen = _record_query_blocks(monkeypatch)
    blocked = attention(q, k, v, budget_bytes=16 * row_bytes + row_bytes // 2)  # 16 rows per block
    expected_blocks = [16] * (queries // 16) + ([queries % 16] if queries % 16 else [])
    assert seen == expected_blocks
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(blocked.double(), _reference(q, k, v), rtol=1e-5, atol=1e-5)


def test_small_inputs_take_one_call(monkeypatch):
    q = torch.randn(2, 1, 40, 8)
    seen = _record_query_blocks(monkeypatch)
    out = attention(q, q, q, budget_bytes=2 * 40 * 40 * 4)  # exactly the whole score matrix
    assert seen == [40]
    torch.testing.assert_close(out.double(), _reference(q, q, q), rtol=1e-5, atol=1e-6)


def test_one_query_per_block_when_a_row_exceeds_the_budget(monkeypatch):
    q = torch.randn(1, 1, 5, 4)
    seen = _record_query_blocks(monkeypatch)
    out = attention(q, q, q, budget_bytes=1)
    assert seen == [1] * 5
    torch.testing.assert_close(out.double(), _reference(q, q, q), rtol=1e-5, atol=1e-6)


def test_gradients_match_through_blocks():
    generator = torch.Generator().manual_seed(7)
    inputs = [torch.randn(2, 1, 23, 6, generator=generator, requires_grad=True) for _ in range(3)]
    weights = torch.randn(2, 1, 23, 6, generator=generator)
    (attention(*inputs, budget_bytes=2 * 23 * 4 * 5) * weights).sum().backward()  # blocks of 5 queries
    blocked = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    (F.scaled_dot_product_attention(*inputs) * weights).sum().backward()
    for got, want in zip(blocked, (t.grad for t in inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_budget_must_be_positive():
    q = torch.randn(1, 1, 3, 2)
    with pytest.raises(ValueError, match="budget_bytes"):
        attention(q, q, q, budget_bytes=0)


@pytest.mark.parametrize("block_class", [AttnBlock, FrameAttnBlock])
def test_attention_blocks_are_unchanged_by_blocking(monkeypatch, block_class):
    """The image block and the video model's per-frame block give the same output with a tiny budget
    (9 x 11 = 99 positions, blocks of 4 queries) as with one call."""
    torch.manual_seed(3)
    block = block_class(32).eval()
    shape = (2, 32, 9, 11) if block_class is AttnBlock else (1, 32, 2, 9, 11)
    x = torch.randn(shape)
    with torch.no_grad():
        whole = block(x)
        monkeypatch.setattr(attention_module, "SCORE_BUDGET_BYTES", 2 * 99 * 4 * 4 + 1)
        seen = _record_query_blocks(monkeypatch)
        blocked = block(x)
    assert seen == [4] * 24 + [3]
    torch.testing.assert_close(blocked, whole, rtol=1e-5, atol=1e-5)
    assert not torch.equal(whole, x)  # the block does something
