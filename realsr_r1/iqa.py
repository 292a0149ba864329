"""pyiqa metrics on the CPU, each built once per process: the rewards, the evaluation protocol and
the quality figures all score through here."""

from __future__ import annotations

from collections.abc import Callable

import torch

_METRICS: dict[tuple, torch.nn.Module] = {}


def _cached(key: tuple, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build each metric once per process (pyiqa metrics are slow to construct)."""
    if key not in _METRICS:
        _METRICS[key] = build()
    return _METRICS[key]


@torch.no_grad()
def pyiqa_scores(name: str, x: torch.Tensor, ref: torch.Tensor | None = None, **opts: object) -> torch.Tensor:
    """Scores of a pyiqa metric (built once) for a batch NCHW in [0, 1]."""
    import pyiqa

    metric = _cached(
        (name, tuple(sorted(opts.items()))), lambda: pyiqa.create_metric(name, device="cpu", **opts)
    )
    out = metric(x) if ref is None else metric(x, ref)
    return out.reshape(len(x)).to(torch.float64)
