"""The combiner: a weighted sum of the four rewards that never lets NaN or inf through.

total = sum_k weight_k * reward_k (all weights 1 is the paper's plain sum). A non-finite value of
any reward is counted, replaced by 0 and reported with a warning, so one failing metric costs
that sample its term, not the whole GRPO group's advantages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

log = logging.getLogger(__name__)


def sanitize(name: str, values: np.ndarray) -> tuple[np.ndarray, int]:
    """`values` with NaN/inf replaced by 0, and how many were replaced (warned about)."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    if n_bad:
        log.warning("reward %s: %d non-finite value(s) of %d replaced by 0", name, n_bad, values.size)
        values = np.where(bad, 0.0, values)
    return values, n_bad


def combine(
    rewards: Mapping[str, np.ndarray], weights: Mapping[str, float]
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]:
    """Weighted total per sample, the sanitized rewards, and the non-finite count per reward."""
    unknown = set(rewards) - set(weights)
    if unknown:
        raise KeyError(f"no weight for reward(s): {', '.join(sorted(unknown))}")
    clean, counts = {}, {}
    for name, values in rewards.items():
        clean[name], counts[name] = sanitize(name, values)
    sizes = {v.shape for v in clean.values()}
    if len(sizes) > 1:
        raise ValueError(f"rewards have different batch shapes: {sorted(sizes)}")
    total = sum(
        (weights[name] * values for name, values in clean.items()),
        start=np.zeros(sizes.pop() if sizes else 0),
    )
    return total, clean, counts
