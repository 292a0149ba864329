"""Stage `grpo`: VLCoT-GRPO from models/sft with the four rewards.

Reads data/shards/{train,val} (or `grpo.shards` on S3), data/annotations/*.jsonl and models/sft;
writes models/grpo, metrics/grpo.json (the SFT and the GRPO model on val with the same seeds; SFT's
figures are metrics/sft.json's final ones when taken with the same seed),
plots/grpo/train.csv (per-step rewards, advantages, KL, clipping, entropies, lengths: outputs in
dvc.lock, nothing timing-dependent) and plots/grpo/speed.csv (rollout / reward / update seconds:
no output, git-ignored). Resumes from the latest complete checkpoint in `grpo.checkpoint_dir`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import transformers

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.evaluate.val import evaluate_policy
from realsr_r1.policy.interface import Policy, Rollout
from realsr_r1.policy.loading import load_policy
from realsr_r1.policy.record import TrainingRecord
from realsr_r1.policy.settings import sampling
from realsr_r1.rewards.scoring import RewardBatch, score_rollout
from realsr_r1.train.checkpoint import CheckpointError
from realsr_r1.train.curves import write_csv
from realsr_r1.train.data import ShardStream, TrainSample, truth
from realsr_r1.train.grpo import GrpoConfig, LossConfig, train_grpo
from realsr_r1.train.zero import DeepSpeedConfigError, zero_config
from stages.common import UsageError, run_stage
from stages.training import (
    check_inputs,
    checkpoints,
    load_trainable,
    make_backend,
    val_set,
    vocabulary,
    whole,
)

START = Path("models/sft")
OUT = Path("models/grpo")
METRICS = Path("metrics/grpo.json")
SFT_METRICS = Path("metrics/sft.json")
PLOTS = Path("plots/grpo")
TIMING = ("rollout_s", "reward_s", "update_s")  # differ run to run: kept out of train.csv
log = logging.getLogger("stages.grpo")


def main(params: Params) -> None:
    p = params.grpo
    if p.launcher != "python" and zero_stage(p.deepspeed) == 3:
        raise UsageError("grpo.deepspeed: ZeRO-3 is not supported by GRPO yet (the rollout needs whole weights on every rank); use zero2")
    inputs = check_inputs("grpo", p, START, "sft")
    transformers.utils.logging.disable_progress_bar()
    policy = load_trainable(p, START)
    roll = sampling(params, policy)
    group = params.rollout.group_size
    if group < 2:
        raise UsageError("rollout.group_size: GRPO needs groups of at least 2 samples")
    loss = LossConfig(
        epsilon=p.epsilon, epsilon_high=p.epsilon_high, beta=p.beta, loss_type=p.loss_type, text_weight=p.text_weight,
        image_weight=p.image_weight, max_tokens=policy.layout.max_completion_length(roll.max_text_tokens) or roll.max_new_tokens,
    )  # fmt: skip
    cfg = GrpoConfig(
        steps=p.steps, prompts=p.prompts, group_size=group, updates=p.updates, advantage_scale=p.advantage_scale,
        advantage_eps=p.advantage_eps, image_credit=p.image_credit, loss=loss, workers=p.workers,
        checkpoint_interval=p.checkpoint_interval, seed=p.seed,
    )  # fmt: skip
    backend = make_backend(p, policy, total_steps=p.steps * p.updates, grad_accum=1, micro_batch=p.prompts * group)
    reference = load_policy(START, policy.device).eval().requires_grad_(False) if p.beta else None
    tags = vocabulary(inputs)
    trained_on = params.rewards if p.reward_weights is None else params.rewards.model_copy(update={"weights": p.reward_weights})

    grid = policy.layout.image_grids["final_image"] if p.image_credit == "cell" else None

    def reward(rollout: Rollout, samples: list[TrainSample]) -> RewardBatch:
        return score_rollout(rollout, [truth(s, tags) for s in samples], trained_on, grid)

    def on_step(row: dict[str, float]) -> None:
        log.info(
            "step %d: reward %.3f (format %.2f, degradation %.2f, understanding %.2f, generation %.2f), zero-advantage "
            "groups %.2f, kl %.4f, clipped %.3f/%.3f, rollout %.1fs reward %.1fs update %.1fs", row["step"], row["reward"],
            row.get("format_mean", 0), row.get("degradation_mean", 0), row.get("understanding_mean", 0),
            row.get("generation_mean", 0), row["zero_advantage_groups"], row["kl"], row["clip_low"], row["clip_high"],
            row["rollout_s"], row["reward_s"], row["update_s"],
        )  # fmt: skip

    train = ShardStream(inputs.urls["train"], inputs.notes["train"], p.shuffle_buffer, p.seed)
    folder = checkpoints(params, "grpo", START, inputs)
    try:
        state = train_grpo(policy, backend, train, cfg, roll, reward, folder, reference, on_step)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    trained = whole(backend, START)
    if trained is None:
        return
    _, evals, constant = val_set(p, inputs, params.val_samples)

    def figures(model: Policy) -> dict:
        return evaluate_policy(model, evals, roll, group, params.rewards, constant, p.seed)

    sft = sft_figures(params) or figures(load_policy(START, trained.device))
    metrics = {"steps": state.step, "sft": sft, "grpo": figures(trained)}
    trained.record = (trained.record or TrainingRecord()).then("grpo", steps=state.step)
    with atomic_dir(OUT) as tmp:
        trained.save_pretrained(tmp)
    write_csv(PLOTS / "train.csv", state.curve, [k for k in state.curve[0] if k not in TIMING])
    write_csv(PLOTS / "speed.csv", state.curve, ["step", *TIMING])
    write_json(METRICS, metrics)
    sft, grpo = metrics["sft"], metrics["grpo"]
    log.info(
        "val, SFT -> GRPO: total reward %.3f -> %.3f, PSNR-Y expected %.2f -> %.2f dB",
        sft["rewards"]["total"], grpo["rewards"]["total"], sft["psnr_y"]["expected"], grpo["psnr_y"]["expected"],
    )  # fmt: skip


def sft_figures(params: Params) -> dict | None:
    """The SFT model's final val figures as the sft stage measured them, when it took them with the
    same seed (the val set, rollout and rewards params are deps of both stages, and the weights are
    its output): the very figures a second evaluation here would give. None: measure."""
    s, p = params.sft, params.grpo
    if not SFT_METRICS.is_file() or s.seed != p.seed:
        return None
    final = dict(json.loads(SFT_METRICS.read_text()).get("final") or {})
    final.pop("step", None)
    return final or None


def zero_stage(config: str) -> int | None:
    try:
        return zero_config(config)[1].get("zero_optimization", {}).get("stage")
    except DeepSpeedConfigError as err:
        raise UsageError(f"grpo.deepspeed: {err}") from None


if __name__ == "__main__":
    run_stage(main)
