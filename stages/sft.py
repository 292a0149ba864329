"""Stage `sft`: cold-start SFT of models/policy_init on the annotated shards.

Reads data/shards/{train,val} (or `sft.shards` on S3), data/annotations/*.jsonl and
models/policy_init; writes models/sft, metrics/sft.json, plots/sft/{train,val}.csv (outputs in
dvc.lock: they hold nothing timing-dependent) and plots/sft/speed.csv (tokens/s: no output, git-ignored).
Resumes from the latest complete checkpoint in `sft.checkpoint_dir` (a killed run continues where it stopped).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import transformers

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.evaluate.val import EvalSample, evaluate_policy, most_frequent
from realsr_r1.policy.interface import Policy
from realsr_r1.policy.record import TrainingRecord
from realsr_r1.policy.settings import resolve_device, sampling
from realsr_r1.policy.tiny import load_policy
from realsr_r1.rewards.scoring import Truth
from realsr_r1.rewards.understanding import tag_vocabulary
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.checkpoint import CheckpointError, Checkpoints
from realsr_r1.train.curves import write_csv
from realsr_r1.train.data import (
    DataError,
    ShardStream,
    check_readers,
    evenly_spaced,
    load_annotations,
    shard_keys,
    shard_urls,
)
from realsr_r1.train.launch import relaunch, world_size
from realsr_r1.train.sft import SftConfig, train_sft
from realsr_r1.train.tuning import set_dropout
from realsr_r1.train.zero import DeepSpeedConfigError, zero_config
from stages.common import UsageError, run_stage

ANNOTATIONS = Path("data/annotations")
INIT = Path("models/policy_init")
OUT = Path("models/sft")
METRICS = Path("metrics/sft.json")
PLOTS = Path("plots/sft")
TIMING = ("tokens_per_s",)  # differs run to run: kept out of train.csv, whose hash dvc.lock records
log = logging.getLogger("stages.sft")


def main(params: Params) -> None:
    p = params.sft
    world = world_size(p.launcher, p.num_processes)
    try:  # inputs are checked before the launcher starts the ranks: a bad one stops with one line
        urls = {split: shard_urls(p.shards, split) for split in ("train", "val")}
        check_readers(urls["train"], "train", world, p.workers)
        notes = {split: load_annotations(ANNOTATIONS / f"{split}.jsonl", shard_keys(urls[split])) for split in urls}
        zero_config(p.deepspeed)
    except DataError as err:
        raise UsageError(str(err)) from None
    except DeepSpeedConfigError as err:
        raise UsageError(f"sft.deepspeed: {err}") from None
    if not (INIT / "policy.json").is_file():
        raise UsageError(f"{INIT}: no initial policy (run the init_policy stage)")
    if (status := relaunch("stages.sft", p.launcher, p.num_processes)) is not None:
        raise SystemExit(status)  # the launcher ran num_processes ranks of this stage
    device = resolve_device(p.device)
    transformers.utils.logging.disable_progress_bar()  # a bar per weight load would bury the stage's own lines
    policy = load_policy(INIT, device)
    set_dropout(policy, p.dropout)
    if p.gradient_checkpointing:
        policy.backbone.gradient_checkpointing_enable()
    precision = p.precision if p.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    optim = OptimConfig(
        lr=p.lr, weight_decay=p.weight_decay, grad_clip=p.grad_clip, warmup_steps=p.warmup_steps, total_steps=p.steps,
        schedule=p.schedule, min_lr_ratio=p.min_lr_ratio, grad_accum=p.grad_accum, precision=precision,
    )
    options = {"device": device} if p.launcher == "python" else {"micro_batch_size": p.batch_size, "zero": p.deepspeed}
    backend = build_backend("plain" if p.launcher == "python" else "deepspeed", policy, optim, **options)
    cfg = SftConfig(
        steps=p.steps, batch_size=p.batch_size, grad_accum=p.grad_accum, text_weight=p.text_weight,
        image_weight=p.image_weight, z_loss=p.z_loss, workers=p.workers, checkpoint_interval=p.checkpoint_interval,
        eval_interval=p.eval_interval, early_eval_step=p.early_eval_step, seed=p.seed,
    )
    train = ShardStream(urls["train"], notes["train"], p.shuffle_buffer, p.seed)
    val = evenly_spaced(list(ShardStream(urls["val"], notes["val"], 1, p.seed, shuffle=False, per_rank=False)), p.eval_samples)
    vocabulary = tag_vocabulary(r.tags for r in notes["train"].values())
    evals = [EvalSample(s.lr, Truth.from_text(s.chain.degradation, s.tags, s.chain.final_image, vocabulary)) for s in val]
    constant = most_frequent(r.degradation for r in sorted(notes["train"].values(), key=lambda r: r.key))

    def rollouts(model: Policy) -> dict:
        return evaluate_policy(model, evals, sampling(params, model), params.rollout.group_size, params.rewards, constant, p.seed)

    def whole() -> Policy | None:
        """The trained weights in a whole policy on rank 0, None on the others: ZeRO-3 leaves each
        rank only a shard of `policy`'s weights (a collective: every rank calls it)."""
        weights = backend.full_state_dict()
        if not backend.is_main:
            return None
        model = load_policy(INIT, backend.device)
        model.load_state_dict(weights)
        return model

    def evaluate(_: Policy) -> dict:
        model = whole()
        return {} if model is None else rollouts(model)

    checkpoints = Checkpoints(p.checkpoint_dir, fingerprint(params, urls, world), p.keep_last)
    val_batches = [val[i : i + p.batch_size] for i in range(0, len(val), p.batch_size)]
    try:
        state = train_sft(policy, backend, train, cfg, checkpoints, val_batches, evaluate)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    trained = whole()
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


def fingerprint(params: Params, urls: dict[str, list[str]], world: int) -> dict:
    """What makes two runs the same run: a checkpoint of another is never resumed from."""
    sft = params.sft.model_dump(exclude={"checkpoint_dir", "keep_last", "checkpoint_interval", "device"})
    digest = hashlib.sha256()
    for path in sorted(INIT.rglob("*")) + sorted(ANNOTATIONS.glob("*.jsonl")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    shards = {split: [(u, Path(u).stat().st_size if Path(u).is_file() else None) for u in us] for split, us in urls.items()}
    return {"sft": sft, "rollout": params.rollout.model_dump(), "rewards": params.rewards.model_dump(),
            "inputs": digest.hexdigest(), "shards": shards, "world_size": world}


if __name__ == "__main__":
    run_stage(main)
