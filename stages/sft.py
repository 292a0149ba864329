"""Stage `sft`: cold-start SFT of models/policy_init on the annotated shards.

Reads data/shards/{train,val} (or `sft.shards` on S3), data/annotations/*.jsonl and
models/policy_init; writes models/sft, metrics/sft.json, plots/sft/{train,val}.csv (outputs in
dvc.lock: they hold nothing timing-dependent) and plots/sft/speed.csv (tokens/s: no output, git-ignored).
Resumes from the latest complete checkpoint in `sft.checkpoint_dir` (a killed run continues where it stopped).
"""

from __future__ import annotations

import logging
from pathlib import Path

import transformers

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.evaluate.val import evaluate_policy
from realsr_r1.policy.interface import Policy
from realsr_r1.policy.record import TrainingRecord
from realsr_r1.policy.settings import sampling
from realsr_r1.train.checkpoint import CheckpointError
from realsr_r1.train.curves import write_csv
from realsr_r1.train.data import ShardStream
from realsr_r1.train.sft import SftConfig, train_sft
from stages.common import UsageError, run_stage
from stages.training import (
    check_inputs,
    checkpoints,
    load_trainable,
    make_backend,
    val_set,
    whole,
)

INIT = Path("models/policy_init")
OUT = Path("models/sft")
METRICS = Path("metrics/sft.json")
PLOTS = Path("plots/sft")
TIMING = ("tokens_per_s",)  # differs run to run: kept out of train.csv, whose hash dvc.lock records
log = logging.getLogger("stages.sft")


def main(params: Params) -> None:
    p = params.sft
    inputs = check_inputs("sft", p, INIT, "init_policy")
    transformers.utils.logging.disable_progress_bar()  # a bar per weight load would bury the stage's own lines
    policy = load_trainable(p, INIT)
    backend = make_backend(p, policy, total_steps=p.steps, grad_accum=p.grad_accum, micro_batch=p.batch_size)
    cfg = SftConfig(
        steps=p.steps, batch_size=p.batch_size, grad_accum=p.grad_accum, text_weight=p.text_weight,
        image_weight=p.image_weight, z_loss=p.z_loss, workers=p.workers, checkpoint_interval=p.checkpoint_interval,
        eval_interval=p.eval_interval, early_eval_step=p.early_eval_step, seed=p.seed,
    )
    train = ShardStream(inputs.urls["train"], inputs.notes["train"], p.shuffle_buffer, p.seed)
    val, evals, constant = val_set(p, inputs, params.val_samples)

    def rollouts(model: Policy) -> dict:
        return evaluate_policy(model, evals, sampling(params, model), params.rollout.group_size, params.rewards, constant, p.seed)

    def evaluate(_: Policy) -> dict:
        model = whole(backend, INIT)
        return {} if model is None else rollouts(model)

    folder = checkpoints(params, "sft", INIT, inputs)
    val_batches = [val[i : i + p.batch_size] for i in range(0, len(val), p.batch_size)]
    try:
        state = train_sft(policy, backend, train, cfg, folder, val_batches, evaluate)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    trained = whole(backend, INIT)
    if trained is None:
        return
    final = {"step": state.step, **rollouts(trained)}
    trained.record = (trained.record or TrainingRecord()).then("sft", steps=state.step)
    with atomic_dir(OUT) as tmp:
        trained.save_pretrained(tmp)
    write_csv(PLOTS / "train.csv", state.curve, [k for k in state.curve[0] if k not in TIMING])
    write_csv(PLOTS / "speed.csv", state.curve, ["step", *TIMING])
    write_csv(PLOTS / "val.csv", state.val_curve)
    early = state.evals.get("early")
    write_json(METRICS, {
        "early": early, "final": final, "steps": state.step, "constant_answer": constant,
        "train_loss": {k: state.curve[-1][k] for k in ("loss", "text_loss", "image_loss")},
        "val_loss": {k: state.val_curve[-1][k] for k in ("loss", "text_loss", "image_loss")},
    })
    psnr = final["psnr_y"]
    log.info(
        "val: format %.3f, degradation %.3f (constant answer %.3f), PSNR-Y expected %.2f / sampled %.2f dB vs bicubic %.2f, ceiling %.2f",
        final["rewards"]["format"], final["rewards"]["degradation"], final["degradation_constant_answer"],
        psnr["expected"], psnr["sampled"], psnr["bicubic"], psnr["tokenizer"],
    )


if __name__ == "__main__":
    run_stage(main)
