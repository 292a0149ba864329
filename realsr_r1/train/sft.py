"""Cold-start SFT: teacher forcing on prompt + seven-block completion, through `Policy` only.

loss = text_weight * NLL(text slots) + image_weight * NLL(image slots) + z_loss * mean(log Z^2)

over the completion's *sampled* slots (`TokenScores.text_mask` / `image_mask`): the prompt and
the tokens the layout forces carry no loss. Each NLL is a per-token mean of its own kind, so
the few text tokens and the many image codes are weighed by params, not by their counts.
The loop runs on any `Backend` and resumes from `Checkpoints` to the same weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from realsr_r1.policy.interface import TEACHER_FORCING, Policy, SequenceBatch, TokenScores
from realsr_r1.train.backend import Backend
from realsr_r1.train.checkpoint import Checkpoints, preserved_rng
from realsr_r1.train.data import ShardStream, TrainSample
from realsr_r1.train.engine import TrainState, checkpoint, endless_batches, resume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SftConfig:
    steps: int
    batch_size: int
    grad_accum: int = 1
    text_weight: float = 1.0
    image_weight: float = 1.0
    z_loss: float = 0.0
    workers: int = 0
    checkpoint_interval: int = 50
    eval_interval: int = 50
    early_eval_step: int = 50
    seed: int = 0


def sft_loss(scores: TokenScores, text_weight: float, image_weight: float, z_loss: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted loss and its parts (detached) from teacher-forced scores."""
    text, image = scores.text_mask.float(), scores.image_mask.float()
    text_nll = -(scores.logprobs * text).sum() / text.sum().clamp(min=1)
    image_nll = -(scores.logprobs * image).sum() / image.sum().clamp(min=1)
    sampled = scores.sampled_mask.float()
    z = (scores.log_z.float().pow(2) * sampled).sum() / sampled.sum().clamp(min=1)
    loss = text_weight * text_nll + image_weight * image_nll + z_loss * z
    return loss, {"text_loss": text_nll.detach(), "image_loss": image_nll.detach(), "z": z.detach()}


def teacher_batch(policy: Policy, samples: list[TrainSample]) -> SequenceBatch:
    """Prompts from the LR photos and targets from the chains."""
    prompts = policy.prompts([s.lr for s in samples])
    return policy.targets(prompts, [s.chain for s in samples])


def batch_tokens(batch: SequenceBatch) -> int:
    """Tokens the forward pass reads (prompt + real completion tokens)."""
    return int(batch.prompt.input_ids.numel() + batch.completion_mask.sum())


@torch.no_grad()
def val_losses(policy: Policy, batches: list[list[TrainSample]], cfg: SftConfig) -> dict[str, float]:
    """Teacher-forced loss parts on fixed val batches, averaged over batches."""
    was_training = policy.training
    policy.eval()
    sums: dict[str, float] = {}
    for samples in batches:
        loss, parts = sft_loss(policy.score(teacher_batch(policy, samples), TEACHER_FORCING), cfg.text_weight, cfg.image_weight, cfg.z_loss)
        for key, value in {"loss": loss, **parts}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    policy.train(was_training)
    return {k: v / max(1, len(batches)) for k, v in sums.items()}


def train_sft(
    policy: Policy,
    backend: Backend,
    stream: ShardStream,
    cfg: SftConfig,
    checkpoints: Checkpoints,
    val_batches: list[list[TrainSample]],
    evaluate: Callable[[Policy], dict[str, Any]] | None = None,
) -> TrainState:
    """Train to `cfg.steps` optimizer steps, resuming from the latest matching checkpoint.

    `evaluate(policy)` (a rollout evaluation) runs at `early_eval_step` on every rank (it may
    gather the weights); its result is kept in the state (and so in every later checkpoint). Each
    rank's RNG states (seeded with seed + rank on a fresh start) and data position are its own,
    saved and restored per rank, so the weights at the end do not depend on interruptions."""
    state = resume(backend, policy, checkpoints, cfg.seed)
    policy.train()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="sft", unit="step", disable=not backend.is_main, mininterval=1)
    tokens, started, parts_sum, micro = 0, time.perf_counter(), {}, 0
    batches = endless_batches(stream, state, cfg.batch_size, cfg.workers, cfg.seed)
    while state.step < cfg.steps:
        samples = next(batches)
        batch = teacher_batch(policy, samples)
        with backend.autocast():
            scores = policy.score(batch, TEACHER_FORCING)
        loss, parts = sft_loss(scores, cfg.text_weight, cfg.image_weight, cfg.z_loss)
        backend.backward(loss)
        tokens += batch_tokens(batch)
        micro += 1
        for key, value in {"loss": loss.detach(), **parts}.items():
            parts_sum[key] = parts_sum.get(key, 0.0) + float(value)
        stepped = backend.step()
        if stepped is None:
            continue
        state.step += 1
        elapsed = time.perf_counter() - started
        row = {"step": state.step, **{k: backend.all_reduce_mean(v / micro) for k, v in parts_sum.items()}, **stepped}
        row["tokens_per_s"] = backend.all_reduce_mean(tokens / max(elapsed, 1e-9)) * backend.world_size
        state.curve.append(row)
        tokens, started, parts_sum, micro = 0, time.perf_counter(), {}, 0
        bar.update(1)
        bar.set_postfix(text=f"{row['text_loss']:.3f}", image=f"{row['image_loss']:.3f}", lr=f"{row['lr']:.1e}")
        if state.step % cfg.eval_interval == 0 or state.step == cfg.steps:
            with preserved_rng():
                val = val_losses(policy, val_batches, cfg)
            state.val_curve.append({"step": state.step, **val})
            log.info("step %d: val text %.4f image %.4f", state.step, val["text_loss"], val["image_loss"])
        if evaluate is not None and state.step == min(cfg.early_eval_step, cfg.steps) and "early" not in state.evals:
            with preserved_rng():
                state.evals["early"] = {"step": state.step, **evaluate(policy)}
            policy.train()
        if state.step % cfg.checkpoint_interval == 0 or state.step == cfg.steps:
            checkpoint(backend, policy, checkpoints, state)
        if state.step >= cfg.steps:
            break
        started = time.perf_counter()  # evaluation and checkpoint time are not training time
    bar.close()
    policy.eval()
    return state
