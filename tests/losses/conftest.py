"""Loss-test fixtures: one seeded random LPIPS per session (it is slow to build) and its weights written to
files in the two stock layouts (torchvision vgg16 with ``classifier.*`` extras; lpips ``lin*.model.1``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenizer.losses import LPIPS


@pytest.fixture(scope="session")
def lpips_net() -> LPIPS:
    return LPIPS.random_init(seed=3)


@pytest.fixture(scope="session")
def lpips_files(lpips_net: LPIPS, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lpips")
    state = lpips_net.state_dict()
    vgg = {k: v.clone() for k, v in state.items() if k.startswith("features.")}
    vgg["classifier.0.weight"] = torch.randn(5, 7)  # torchvision's file carries the classifier too
    vgg["classifier.6.bias"] = torch.randn(5)
    lin = {k: v.clone() for k, v in state.items() if k.startswith("lin")}
    torch.save(vgg, root / "vgg16.pth")
    torch.save(lin, root / "vgg.pth")
    return root / "vgg16.pth", root / "vgg.pth"
