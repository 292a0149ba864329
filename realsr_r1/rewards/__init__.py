"""The four VLCoT-GRPO rewards (format, degradation, understanding, generation) and their combiner.

Each reward is a batched pure function over parsed chains (`VLCoT`, or None for a completion that
failed to parse) and their ground truth, returning floats in [0, 1]; `score_batch` runs all four
(`score_rollout` for a policy rollout, whose truncated rows score format 0).
"""

from realsr_r1.rewards.combine import combine, sanitize
from realsr_r1.rewards.degradation import degradation_reward, degradation_score, matched_items
from realsr_r1.rewards.format import expected_shapes, format_reward
from realsr_r1.rewards.generation import MetricWeightsError, generation_reward
from realsr_r1.rewards.scoring import REWARDS, RewardBatch, Truth, parse_all, score_batch, score_rollout
from realsr_r1.rewards.understanding import tag_vocabulary, understanding_reward

__all__ = [
    "REWARDS",
    "MetricWeightsError",
    "RewardBatch",
    "Truth",
    "combine",
    "degradation_reward",
    "degradation_score",
    "expected_shapes",
    "format_reward",
    "generation_reward",
    "matched_items",
    "parse_all",
    "sanitize",
    "score_batch",
    "score_rollout",
    "tag_vocabulary",
    "understanding_reward",
]
