"""Score a batch of completions against their ground truth with all four rewards at once.

Completions are parsed once (`vlcot.parse`; a `VLCoTFormatError` becomes None, which every reward
scores 0), each reward runs batched, and the combiner makes the total. This is what SFT
evaluation and every GRPO rollout call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from realsr_r1.config import RewardParams
from realsr_r1.degrade.describe import Item, from_text
from realsr_r1.rewards.combine import combine
from realsr_r1.rewards.degradation import degradation_reward
from realsr_r1.rewards.format import format_reward
from realsr_r1.rewards.generation import generation_reward
from realsr_r1.rewards.understanding import load_embedder, understanding_reward
from realsr_r1.vlcot import Completion, VLCoT, VLCoTFormatError, parse

REWARDS = ("format", "degradation", "understanding", "generation")


@dataclass(frozen=True)
class Truth:
    """Ground truth of one sample: the degradation items, the tags and the GT image (uint8 HxWx3)."""

    degradation: tuple[Item, ...]
    tags: tuple[str, ...]
    gt: np.ndarray

    @classmethod
    def from_text(cls, degradation: str, tags: Sequence[str], gt: np.ndarray) -> Truth:
        """Build from the degradation text (e.g. an annotation record's); raises ValueError if bad."""
        return cls(tuple(from_text(degradation)), tuple(tags), gt)


@dataclass(frozen=True)
class RewardBatch:
    """Per-sample rewards (sanitized, in [0, 1]), their weighted total and the parse errors."""

    rewards: dict[str, np.ndarray]
    total: np.ndarray
    non_finite: dict[str, int]
    errors: list[str | None] = field(default_factory=list)  # the format error of each sample, or None


def parse_all(completions: Sequence[Completion]) -> tuple[list[VLCoT | None], list[str | None]]:
    """Parse each completion; failures become None with the error text alongside."""
    chains: list[VLCoT | None] = []
    errors: list[str | None] = []
    for completion in completions:
        try:
            chains.append(parse(completion))
            errors.append(None)
        except VLCoTFormatError as err:
            chains.append(None)
            errors.append(str(err))
    return chains, errors


def score_batch(
    completions: Sequence[Completion], truths: Sequence[Truth], params: RewardParams
) -> RewardBatch:
    """All four rewards and the weighted total for a batch of completions."""
    if len(completions) != len(truths):
        raise ValueError(f"{len(completions)} completions but {len(truths)} truths")
    chains, errors = parse_all(completions)
    und = params.understanding
    embedder = load_embedder(und.model) if und.mode == "semantic" else None
    raw = {
        "format": format_reward(chains, [t.gt.shape[:2] for t in truths]),
        "degradation": degradation_reward(chains, [t.degradation for t in truths]),
        "understanding": understanding_reward(
            chains, [t.tags for t in truths], und.mode, und.threshold, und.max_ngram, embedder
        ),
        "generation": generation_reward(chains, [t.gt for t in truths], params.generation),
    }
    total, clean, counts = combine(raw, params.weights.model_dump())
    return RewardBatch(rewards=clean, total=total, non_finite=counts, errors=errors)
