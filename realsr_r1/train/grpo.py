"""VLCoT-GRPO: group rollouts, the four rewards, and the clipped surrogate of DeepSeekMath
(arXiv 2402.03300) with an optional k3 KL to a frozen reference, on the SFT engine.

Per rollout batch (P prompts x G samples, `Policy.rollout`): rewards r (the weighted total),
group-relative advantages A = (r - mean_G) / (std_G + eps) (or the batch std, or no scaling),
then `updates` optimizer steps on

    ratio_t = pi(o_t) / pi_old(o_t)          (pi_old: the rollout's own log-probs)
    l_t = -min(ratio_t A, clip(ratio_t, 1 - eps_low, 1 + eps_high) A) + beta k3_t
    k3_t = pi_ref(o_t) / pi(o_t) - log(pi_ref(o_t) / pi(o_t)) - 1

over the sampled tokens (text weighted by `text_weight`, image codes by `image_weight`; the tokens
the layout forces carry none), reduced as `loss_type` says:
    grpo     mean over samples of each sample's token mean (DeepSeekMath),
    dapo     one token mean over the batch (DAPO),
    dr_grpo  the token sum over P * G * max_tokens, a constant (Dr. GRPO).
Credit (`image_credit`): with `sequence` (the paper's) every token of a sample gets its A; with
`cell` the final image's codes get their own cell's advantage instead, the same formula over the
group's values of that cell's share of the generation reward (`generation_cells`: SSIM is a mean
of a per-pixel map), since a code only changes its own neighbourhood of the image and one
number per 64-code image says little of which codes earned it.
The paper's own recipe is beta 0 and one update per rollout (the ratio is then 1 and the loss
is REINFORCE with group-normalised advantages). The loop is SFT's: the same backend, checkpoint,
data position and resume (`engine`), so a killed run ends with the same weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from realsr_r1.policy.interface import Policy, Rollout, Sampling
from realsr_r1.rewards.scoring import RewardBatch
from realsr_r1.train.backend import Backend
from realsr_r1.train.checkpoint import Checkpoints
from realsr_r1.train.data import ShardStream, TrainSample
from realsr_r1.train.engine import TrainState, checkpoint, endless_batches, resume

log = logging.getLogger(__name__)

LossType = Literal["grpo", "dr_grpo", "dapo"]
AdvantageScale = Literal["group", "batch", "none"]
ImageCredit = Literal["sequence", "cell"]


@dataclass(frozen=True)
class LossConfig:
    """The objective's knobs (params section `grpo`)."""

    epsilon: float = 0.2  # clip range below 1 (and above, unless epsilon_high is set)
    epsilon_high: float | None = None  # DAPO clip-higher: the upper clip 1 + epsilon_high
    beta: float = 0.0  # k3 KL weight; 0: no reference model is loaded
    loss_type: LossType = "grpo"
    text_weight: float = 1.0
    image_weight: float = 1.0
    max_tokens: int = 1  # dr_grpo's constant: the longest completion the rollout allows

    @property
    def upper(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclass(frozen=True)
class GrpoConfig:
    steps: int  # rollout batches
    prompts: int  # P prompts per rollout batch (x group_size samples)
    group_size: int
    updates: int = 1  # mu: optimizer steps per rollout batch
    advantage_scale: AdvantageScale = "group"
    advantage_eps: float = 1e-4
    image_credit: ImageCredit = "sequence"
    loss: LossConfig = LossConfig()
    workers: int = 0
    checkpoint_interval: int = 10
    seed: int = 0


@dataclass(frozen=True)
class RolloutBatch:
    """One step's experience: the rollout, its rewards, advantages and reference log-probs."""

    rollout: Rollout
    rewards: RewardBatch
    advantages: torch.Tensor  # (N, L) per completion token (`token_advantages`)
    ref_logprobs: torch.Tensor | None  # (N, L) under the frozen reference; None when beta = 0


def group_advantages(rewards: torch.Tensor, group_size: int, scale: AdvantageScale = "group", eps: float = 1e-4) -> torch.Tensor:
    """(r - group mean), divided by the group's std (unbiased, as DeepSeekMath and TRL), the
    batch's std, or nothing; a group of equal rewards gets exactly 0 (never NaN)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    if group_size < 2:
        raise ValueError("group_size must be at least 2: one sample has no group to be relative to")
    groups = rewards.double().view(-1, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.double().std() + eps)
    elif scale != "none":
        raise ValueError(f"advantage scale {scale!r}: expected group, batch or none")
    return centred.flatten().to(rewards.dtype)


def token_advantages(rollout: Rollout, rewards: RewardBatch, cfg: GrpoConfig) -> torch.Tensor:
    """(N, L): each sample's group advantage of the total on all its tokens; under `cell` credit
    its final image's codes (the last codes of the row, raster order) get their cells' instead,
    in each group whose every sample has a final image to split (`rewards.cells`)."""
    g = cfg.group_size
    total = torch.as_tensor(rewards.total, dtype=torch.float32)
    sequence = group_advantages(total, g, cfg.advantage_scale, cfg.advantage_eps)
    adv = sequence.unsqueeze(1).expand_as(rollout.logprobs).clone()
    if cfg.image_credit == "sequence":
        return adv
    if rewards.cells is None:
        raise ValueError("image_credit 'cell' needs the rewards split over cells (score with a grid)")
    for start in range(0, len(total), g):
        cells = rewards.cells[start : start + g]
        if any(c is None for c in cells) or len({c.shape for c in cells}) > 1:
            continue
        values = torch.as_tensor(np.stack([c.ravel() for c in cells], 1), dtype=torch.float32)  # (cells, G)
        per_cell = group_advantages(values.flatten(), g, cfg.advantage_scale, cfg.advantage_eps).view(-1, g)
        for k in range(g):
            codes = rollout.image_mask[start + k].nonzero().squeeze(1)
            if len(codes) < len(values):
                raise ValueError(f"row {start + k}: {len(codes)} image codes, fewer than its {len(values)} cells")
            adv[start + k, codes[-len(values) :]] = per_cell[:, k].to(adv.dtype)
    return adv


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    cfg: LossConfig,
    ref_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (see the module docstring) and its statistics: mean k3 KL, and the share of
    sampled tokens whose ratio is clipped below / above (where the clip zeroes the gradient).
    `advantages`: (N,) one per sample, or (N, L) one per token."""
    mask = (text_mask | image_mask).float()
    weight = cfg.text_weight * text_mask.float() + cfg.image_weight * image_mask.float()
    ratio = torch.exp(logprobs - old_logprobs)
    adv = (advantages if advantages.dim() == 2 else advantages.unsqueeze(1)).to(ratio.dtype)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.epsilon, 1 + cfg.upper) * adv)
    per_token = -surrogate
    kl = torch.zeros_like(ratio)
    if cfg.beta:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + cfg.beta * kl
    per_token = per_token * weight
    if cfg.loss_type == "grpo":
        loss = (per_token.sum(1) / mask.sum(1).clamp(min=1)).mean()
    elif cfg.loss_type == "dapo":
        loss = per_token.sum() / mask.sum().clamp(min=1)
    elif cfg.loss_type == "dr_grpo":
        loss = per_token.sum() / (per_token.shape[0] * cfg.max_tokens)
    else:
        raise ValueError(f"loss type {cfg.loss_type!r}: expected grpo, dr_grpo or dapo")
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        low = ((ratio < 1 - cfg.epsilon) & (adv < 0)).float() * mask
        high = ((ratio > 1 + cfg.upper) & (adv > 0)).float() * mask
        stats = {
            "kl": float((kl * mask).sum() / tokens),
            "clip_low": float(low.sum() / tokens),
            "clip_high": float(high.sum() / tokens),
        }
    return loss, stats


def rollout_stats(batch: RolloutBatch, group_size: int) -> dict[str, float]:
    """Per-step figures of the experience: each reward's mean and std, the total, the advantage
    std, the share of groups with zero advantage, lengths, truncation, and per-kind entropy
    estimates (the mean negative log-prob of the sampled tokens under the sampling distribution)."""
    r, out = batch.rollout, {}
    for name, values in batch.rewards.rewards.items():
        out[f"{name}_mean"], out[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
    total = torch.as_tensor(batch.rewards.total, dtype=torch.float64)
    out["reward"], out["reward_std"] = float(total.mean()), float(total.std(unbiased=False))
    sampled = r.sampled_mask
    out["advantage_std"] = float(batch.advantages[sampled].double().std(unbiased=False))
    moved = (batch.advantages.abs() * sampled).view(-1, group_size * sampled.shape[1]).amax(1)
    out["zero_advantage_groups"] = float((moved == 0).double().mean())
    text, image = r.text_mask.float(), r.image_mask.float()
    out["entropy_text"] = float(-(r.logprobs * text).sum() / text.sum().clamp(min=1))
    out["entropy_image"] = float(-(r.logprobs * image).sum() / image.sum().clamp(min=1))
    out["completion_length"] = float(r.batch.completion_mask.float().sum(1).mean())
    out["text_length"] = float(text.sum(1).mean())
    out["truncated"] = float(r.truncated.float().mean())
    return out


def collect(
    policy: Policy,
    samples: list[TrainSample],
    cfg: GrpoConfig,
    sampling: Sampling,
    reward: Callable[[Rollout, list[TrainSample]], RewardBatch],
    reference: Policy | None,
    seed: int,
) -> tuple[RolloutBatch, dict[str, float]]:
    """Roll out G samples per prompt with the training model itself (no gradient), score them and
    make the advantages; at scale a generation server (vLLM) would take this call's place."""
    timing = {}
    started = time.perf_counter()
    was_training = policy.training
    policy.eval()
    with torch.no_grad():
        rollout = policy.rollout(policy.prompts([s.lr for s in samples]), cfg.group_size, sampling, seed=seed)
    policy.train(was_training)
    timing["rollout_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rewards = reward(rollout, [s for s in samples for _ in range(cfg.group_size)])
    advantages = token_advantages(rollout, rewards, cfg)
    timing["reward_s"] = time.perf_counter() - started
    ref = None
    if reference is not None and cfg.loss.beta:
        with torch.no_grad():
            ref = reference.score(rollout.batch, sampling).logprobs.detach()
    return RolloutBatch(rollout, rewards, advantages.to(rollout.logprobs.device), ref), timing


def update(policy: Policy, backend: Backend, batch: RolloutBatch, cfg: GrpoConfig, sampling: Sampling) -> dict[str, float]:
    """`updates` optimizer steps on one rollout batch; the last step's loss figures."""
    r = batch.rollout
    stats: dict[str, float] = {}
    for _ in range(cfg.updates):
        with backend.autocast():
            scores = policy.score(r.batch, sampling)
        loss, stats = grpo_loss(scores.logprobs, r.logprobs, batch.advantages, r.text_mask, r.image_mask, cfg.loss, batch.ref_logprobs)
        backend.backward(loss)
        stepped = backend.step()
        stats = {"loss": float(loss.detach()), **stats, **(stepped or {})}
    return stats


def train_grpo(
    policy: Policy,
    backend: Backend,
    stream: ShardStream,
    cfg: GrpoConfig,
    sampling: Sampling,
    reward: Callable[[Rollout, list[TrainSample]], RewardBatch],
    checkpoints: Checkpoints,
    reference: Policy | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainState:
    """Run to `cfg.steps` rollout batches, resuming from the latest matching checkpoint; each
    step's figures go to `state.curve` and `on_step` (e.g. a logger). Rollout seeds are a pure
    function of (seed, step), so a resumed run draws the very samples it would have."""
    if cfg.loss.beta and reference is None:
        raise ValueError("beta > 0 needs a reference policy")
    state = resume(backend, policy, checkpoints, cfg.seed)
    policy.train()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="grpo", unit="step", disable=not backend.is_main, mininterval=1)
    batches = endless_batches(stream, state, cfg.prompts, cfg.workers, cfg.seed)
    while state.step < cfg.steps:
        samples = next(batches)
        seed = cfg.seed * 1_000_003 + state.step * 7_919 + backend.rank
        batch, timing = collect(policy, samples, cfg, sampling, reward, reference, seed)
        started = time.perf_counter()
        losses = update(policy, backend, batch, cfg, sampling)
        timing["update_s"] = time.perf_counter() - started
        state.step += 1
        row = {"step": state.step, **rollout_stats(batch, cfg.group_size), **losses, **timing}
        row = {k: (v if k == "step" else backend.all_reduce_mean(v)) for k, v in row.items()}
        state.curve.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.4f}", zero=f"{row['zero_advantage_groups']:.2f}")
        if on_step is not None:
            on_step(row)
        if state.step % cfg.checkpoint_interval == 0 or state.step == cfg.steps:
            checkpoint(backend, policy, checkpoints, state)
    bar.close()
    policy.eval()
    return state
