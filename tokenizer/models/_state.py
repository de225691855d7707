"""Strict state-dict comparison: one error that lists every missing, unexpected and mis-shaped tensor."""

from __future__ import annotations

from collections.abc import Mapping

import torch

_LISTED = 20  # names shown per category before "... and N more"


def _listing(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [f"  {line}" for line in lines[:_LISTED]]
    if len(lines) > _LISTED:
        shown.append(f"  ... and {len(lines) - _LISTED} more")
    return [f"{title} ({len(lines)}):", *shown]


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``ValueError`` unless ``found`` holds exactly the names and shapes of ``expected``.

    ``source`` names where ``found`` came from (a file), for the message.
    """
    missing = [f"{k} {tuple(v.shape)}" for k, v in expected.items() if k not in found]
    unexpected = [f"{k} {tuple(v.shape)}" for k, v in found.items() if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(found[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"the weights in {source} do not match the model's config:"]
        lines += _listing("missing tensors", missing)
        lines += _listing("unexpected tensors", unexpected)
        lines += _listing("shape mismatches", mismatched)
        raise ValueError("\n".join(lines))
