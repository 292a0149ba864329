"""A policy's val figures: the four rewards of sampled completions, the final image's PSNR/SSIM
(Y channel) and seam ratio for sampled and expected decoding next to bicubic's and the tokenizer's
ceiling, and the score of always answering the most frequent training degradation text. No
no-reference quality: on 64 px crops NIQE ranks a shuffled mosaic above bicubic (the evaluate
stage scores it on whole photos).

Shared by SFT (at an early step and at the end), GRPO and the evaluate stage; it only rolls
out and scores, never trains.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from realsr_r1.config import RewardParams
from realsr_r1.evaluate.seams import seam_ratio
from realsr_r1.policy.interface import Policy, Rollout, Sampling
from realsr_r1.quality import border, psnr_ssim_y
from realsr_r1.rewards.degradation import degradation_reward
from realsr_r1.rewards.scoring import REWARDS, Truth, score_rollout
from realsr_r1.tokenizers.base import bicubic
from realsr_r1.tokenizers.image import to_tensor, to_uint8
from realsr_r1.vlcot import VLCoT


@dataclass(frozen=True)
class EvalSample:
    """One held-out sample: the LR photo and its truth (GT, degradation items, tags)."""

    lr: np.ndarray
    truth: Truth


def most_frequent(texts: Iterable[str]) -> str:
    """The most frequent text (ties: the first seen): the constant answer a model must beat."""
    counts = Counter(texts)
    if not counts:
        raise ValueError("no texts to take the most frequent of")
    return counts.most_common(1)[0][0]


def constant_answer_score(text: str, truths: Sequence[Truth]) -> float:
    """Mean degradation reward of answering `text` for every sample."""
    chain = VLCoT(degradation=text, rough_understand="", middle_understand="", final_understand="")
    return float(degradation_reward([chain] * len(truths), [t.degradation for t in truths]).mean())


@contextmanager
def decoding(policy: Policy, mode: str) -> Iterator[None]:
    """Roll out with the image tokenizer's decode set to `mode` (sample | expected), then restore it."""
    tokenizer = policy.image_tokenizer
    before = tokenizer.config
    tokenizer.config = replace(before, decode=mode)
    try:
        yield
    finally:
        tokenizer.config = before


@dataclass
class PolicyOutputs:
    """One rollout of every sample: the rollouts with their truths, and per row the final image of
    the drawn codes and of expected decoding (bicubic where the sample did not finish it)."""

    rollouts: list[tuple[Rollout, list[Truth]]]
    sampled: list[np.ndarray]
    expected: list[np.ndarray]
    missing: int  # rows whose final image is bicubic's

    def rewards(self, params: RewardParams) -> dict[str, list[float]]:
        """Each reward and the weighted total, per row in sample order."""
        scores: dict[str, list[float]] = {k: [] for k in (*REWARDS, "total")}
        for rollout, truths in self.rollouts:
            batch = score_rollout(rollout, truths, params)
            for key in REWARDS:
                scores[key] += batch.rewards[key].tolist()
            scores["total"] += batch.total.tolist()
        return scores


def final_images(policy: Policy, samples: Sequence[EvalSample], sampling: Sampling, group: int, seed: int, batch: int) -> PolicyOutputs:
    """Roll out every sample `group` times, `batch` prompts per rollout (seeded by position, so
    the figures do not depend on the batch size's remainder), keeping both decodings."""
    rollouts, sampled, expected, missing = [], [], [], 0
    with decoding(policy, "sample"), torch.no_grad():
        for start in range(0, len(samples), batch):
            part = samples[start : start + batch]
            rollout = policy.rollout(policy.prompts([s.lr for s in part]), group, sampling, seed=seed + start, expected_final=True)
            rollouts.append((rollout, [s.truth for s in part for _ in range(group)]))
            for i, (completion, mean) in enumerate(zip(rollout.completions, rollout.expected_final, strict=True)):
                if len(completion.images) == 3:
                    sampled.append(completion.images[2])
                    expected.append(mean)
                else:
                    missing += 1
                    sample = part[i // group]
                    fallback = to_uint8(bicubic(to_tensor(sample.lr), sample.truth.gt.shape[:2]))[0]
                    sampled.append(fallback)
                    expected.append(fallback)
    return PolicyOutputs(rollouts, sampled, expected, missing)


def evaluate_policy(
    policy: Policy,
    samples: Sequence[EvalSample],
    sampling: Sampling,
    group_size: int,
    rewards: RewardParams,
    constant_answer: str,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """The val figures of `policy` (a JSON-able dict); see the module docstring."""
    was_training = policy.training
    policy.eval()
    outputs = final_images(policy, samples, sampling, group_size, seed, batch_size)
    scores = outputs.rewards(rewards)
    parsed = sum(c is not None for r, _ in outputs.rollouts for c in r.chains)
    truncated = sum(int(r.truncated.sum()) for r, _ in outputs.rollouts)
    gts = [s.truth.gt for s in samples for _ in range(group_size)]
    lr = to_tensor([s.lr for s in samples])
    gt_t = to_tensor([s.truth.gt for s in samples])
    tokenizer = policy.image_tokenizer
    ceiling = to_uint8(tokenizer.reconstruct(gt_t, lr))
    bicubic_images = to_uint8(bicubic(lr, tuple(gt_t.shape[-2:])))
    only_gt = [s.truth.gt for s in samples]
    pixels = border(gt_t.shape[-1], lr.shape[-1])
    psnr, ssim, seams = {}, {}, {}
    for name, images, truth in (
        ("sampled", outputs.sampled, gts),
        ("expected", outputs.expected, gts),
        ("bicubic", list(bicubic_images), only_gt),
        ("tokenizer", list(ceiling), only_gt),
    ):
        psnr[name], ssim[name] = (float(v.mean()) for v in psnr_ssim_y(images, truth, pixels))
        seams[name] = float(seam_ratio(to_tensor(list(images))).mean())
    policy.train(was_training)
    rows = len(gts)
    return {
        "rewards": {k: float(np.mean(v)) for k, v in scores.items()},
        "degradation_constant_answer": constant_answer_score(constant_answer, [s.truth for s in samples]),
        "psnr_y": psnr,
        "ssim_y": ssim,
        "seams": seams,
        "parsed": parsed / rows,
        "truncated": truncated / rows,
        "final_missing": outputs.missing / rows,
        "rows": rows,
    }

