"""Degradation reward: how much of the GT (operation, severity) list the `<degradation>` text gets right.

Alignment rule (the paper compares "item by item"; we make that precise for lists of any length
or order): matches = length of the longest common subsequence of the predicted and GT item
lists (exact (operation, severity) equality), reward = matches / max(len(gt), len(pred)).
- Same length and order (the paper's case): the count of positions that agree, so the paper's
  example (5 items, two severities wrong) scores 3/5 = 0.6.
- Reordered items: only the items kept in the GT's relative order count.
- Extra predicted items lower the reward (the denominator grows), so listing every operation
  cannot game it; missing items lower it too.
- Text that is not a degradation list (`describe.from_text` fails) scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from realsr_r1.degrade.describe import Item, from_text
from realsr_r1.vlcot import VLCoT


def matched_items(pred: Sequence[Item], gt: Sequence[Item]) -> int:
    """Length of the longest common subsequence of two item lists (order-preserving matches)."""
    prev = [0] * (len(gt) + 1)
    for p in pred:
        cur = [0]
        for j, g in enumerate(gt):
            cur.append(prev[j] + 1 if p == g else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def item_score(pred: Sequence[Item], gt: Sequence[Item]) -> float:
    """Matched fraction of the longer list; two empty lists agree fully."""
    longest = max(len(pred), len(gt))
    return 1.0 if longest == 0 else matched_items(pred, gt) / longest


def degradation_score(text: str, gt: Sequence[Item]) -> float:
    """Score one `<degradation>` text against the GT items; unparseable text scores 0."""
    try:
        pred = from_text(text)
    except ValueError:
        return 0.0
    return item_score(pred, [tuple(item) for item in gt])


def degradation_reward(chains: Sequence[VLCoT | None], gt_items: Sequence[Sequence[Item]]) -> np.ndarray:
    """Per chain: `degradation_score` of its `<degradation>` block; 0 for an unparsed chain."""
    return np.array(
        [
            0.0 if c is None else degradation_score(c.degradation, gt)
            for c, gt in zip(chains, gt_items, strict=True)
        ],
        dtype=np.float64,
    )
