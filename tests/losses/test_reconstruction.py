"""Pixel reconstruction loss: values against hand sums, errors."""

from __future__ import annotations

import pytest
import torch

from tokenizer.losses import reconstruction_loss


def test_l1_and_l2_values():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    x_hat = torch.tensor([[0.0, 1.0], [0.5, 1.0]])
    # differences 1, -3, 0, 2
    assert reconstruction_loss(x, x_hat, "l1").item() == pytest.approx((1 + 3 + 0 + 2) / 4)
    assert reconstruction_loss(x, x_hat, "l2").item() == pytest.approx((1 + 9 + 0 + 4) / 4)
    assert reconstruction_loss(x, x_hat).item() == pytest.approx(1.5)  # default l1


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_video_shape_and_gradient(kind):
    x = torch.randn(2, 3, 5, 7, 7)
    x_hat = torch.randn(2, 3, 5, 7, 7, requires_grad=True)
    loss = reconstruction_loss(x, x_hat, kind)
    loss.backward()
    expected = (x - x_hat).abs() if kind == "l1" else (x - x_hat).square()
    assert torch.allclose(loss, expected.mean())
    assert x_hat.grad.abs().sum() > 0


def test_errors():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="'huber'"):
        reconstruction_loss(x, x, "huber")
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\) and \(1, 3, 4, 1\)"):
        reconstruction_loss(x, torch.zeros(1, 3, 4, 1))
