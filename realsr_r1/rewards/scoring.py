"""Score a batch of completions against their ground truth with all four rewards at once.

Completions are parsed once (`vlcot.parse`; a `VLCoTFormatError` becomes None, which every reward
scores 0), each reward runs batched, and the combiner makes the total. A completion marked
truncated (a length guard of the rollout closed one of its text blocks or cut it) scores format 0
even when it parses. This is what SFT evaluation and every GRPO rollout (`score_rollout`) call.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from realsr_r1.config import RewardParams
from realsr_r1.degrade.describe import Item, from_text
from realsr_r1.rewards.combine import combine
from realsr_r1.rewards.degradation import degradation_reward
from realsr_r1.rewards.format import format_reward
from realsr_r1.rewards.generation import generation_cells, generation_reward
from realsr_r1.rewards.understanding import load_embedder, understanding_reward
from realsr_r1.vlcot import Completion, VLCoT, VLCoTFormatError, parse

if TYPE_CHECKING:
    from realsr_r1.policy.interface import Rollout

REWARDS = ("format", "degradation", "understanding", "generation")


@dataclass(frozen=True)
class Truth:
    """Ground truth of one sample: the degradation items, the tags, the GT image (uint8 HxWx3) and
    the tag vocabulary the tags were chosen from (`understanding.tag_vocabulary` of the dataset's
    annotations; share one frozenset): the tags a caption may mention without being in the GT."""

    degradation: tuple[Item, ...]
    tags: tuple[str, ...]
    gt: np.ndarray
    vocabulary: frozenset[str] = frozenset()

    @classmethod
    def from_text(
        cls, degradation: str, tags: Sequence[str], gt: np.ndarray, vocabulary: Collection[str] = frozenset()
    ) -> Truth:
        """Build from the degradation text (e.g. an annotation record's); raises ValueError if bad."""
        return cls(tuple(from_text(degradation)), tuple(tags), gt, frozenset(vocabulary))


@dataclass(frozen=True)
class RewardBatch:
    """Per-sample rewards (sanitized, in [0, 1]), their weighted total and the parse errors."""

    rewards: dict[str, np.ndarray]
    total: np.ndarray
    non_finite: dict[str, int]
    errors: list[str | None] = field(default_factory=list)  # why each sample scored format 0, or None
    # per sample, the generation reward split over its final image's cells (`generation_cells`);
    # None when not asked for (no `grid`), an entry None where the image cannot be split
    cells: list[np.ndarray | None] | None = None


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


TRUNCATED = "truncated: a length guard closed a text block or cut the sample"


def score_batch(
    completions: Sequence[Completion],
    truths: Sequence[Truth],
    params: RewardParams,
    truncated: Sequence[bool] | None = None,
    grid: tuple[int, int] | None = None,
) -> RewardBatch:
    """All four rewards and the weighted total; `truncated[i]` (a rollout's flag) zeroes format;
    with `grid` (rows, cols), also the weighted generation reward split over that grid of cells."""
    if len(completions) != len(truths):
        raise ValueError(f"{len(completions)} completions but {len(truths)} truths")
    truncated = [False] * len(completions) if truncated is None else [bool(t) for t in truncated]
    if len(truncated) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(truncated)} truncation flags")
    chains, errors = parse_all(completions)
    errors = [TRUNCATED if cut and err is None else err for cut, err in zip(truncated, errors, strict=True)]
    und = params.understanding
    embedder = load_embedder(und.model) if und.mode == "semantic" else None
    raw = {
        "format": format_reward(chains, [t.gt.shape[:2] for t in truths], truncated),
        "degradation": degradation_reward(chains, [t.degradation for t in truths]),
        "understanding": understanding_reward(
            chains,
            [t.tags for t in truths],
            und.mode,
            und.threshold,
            und.max_ngram,
            embedder,
            [t.vocabulary for t in truths],
        ),
        "generation": generation_reward(chains, [t.gt for t in truths], params.generation),
    }
    weights = params.weights.model_dump()
    total, clean, counts = combine(raw, weights)
    cells = None
    if grid is not None:
        split = generation_cells(chains, [t.gt for t in truths], clean["generation"], params.generation, grid)
        cells = [None if c is None else weights["generation"] * c for c in split]
    return RewardBatch(rewards=clean, total=total, non_finite=counts, errors=errors, cells=cells)


def score_rollout(
    rollout: Rollout, truths: Sequence[Truth], params: RewardParams, grid: tuple[int, int] | None = None
) -> RewardBatch:
    """Score a policy rollout (row i against truths[i]), its truncation flags included."""
    return score_batch(rollout.completions, truths, params, truncated=rollout.truncated.tolist(), grid=grid)
