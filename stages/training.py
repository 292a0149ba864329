"""What the training stages (sft, grpo) share: their inputs checked before any launch, the engine's
backend from their params, the val evaluation set, the whole weights on rank 0, and the run
fingerprint that decides whether a checkpoint may be resumed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from realsr_r1.annotate.records import AnnotationRecord
from realsr_r1.config import EngineParams, Params
from realsr_r1.data.shards import evenly_spaced
from realsr_r1.evaluate.val import EvalSample, most_frequent
from realsr_r1.policy.interface import Policy
from realsr_r1.policy.loading import load_policy
from realsr_r1.policy.settings import resolve_device
from realsr_r1.rewards.understanding import tag_vocabulary
from realsr_r1.train.backend import Backend, OptimConfig, build_backend
from realsr_r1.train.checkpoint import Checkpoints
from realsr_r1.train.data import (
    DataError,
    ShardStream,
    TrainSample,
    check_readers,
    load_annotations,
    shard_keys,
    shard_urls,
    truth,
)
from realsr_r1.train.launch import relaunch, world_size
from realsr_r1.train.tuning import set_dropout
from realsr_r1.train.zero import DeepSpeedConfigError, zero_config
from stages.common import UsageError

ANNOTATIONS = Path("data/annotations")


@dataclass(frozen=True)
class Inputs:
    """The shard URLs and annotations of both splits, checked."""

    urls: dict[str, list[str]]
    notes: dict[str, dict[str, AnnotationRecord]]
    world: int


def check_inputs(section: str, p: EngineParams, start: Path, producer: str) -> Inputs:
    """Check shards, annotations, the DeepSpeed config and the starting checkpoint, then (under a
    launcher) start the ranks of stage `section`; a bad input stops with one line before any launch.
    `producer`: the stage that writes `start`, named in the error when it is missing."""
    world = world_size(p.launcher, p.num_processes)
    try:
        urls = {split: shard_urls(p.shards, split) for split in ("train", "val")}
        check_readers(urls["train"], "train", world, p.workers)
        notes = {split: load_annotations(ANNOTATIONS / f"{split}.jsonl", shard_keys(urls[split])) for split in urls}
        zero_config(p.deepspeed)
    except DataError as err:
        raise UsageError(str(err)) from None
    except DeepSpeedConfigError as err:
        raise UsageError(f"{section}.deepspeed: {err}") from None
    if not (start / "policy.json").is_file():
        raise UsageError(f"{start}: no policy to start from (run the {producer} stage)")
    if (status := relaunch(f"stages.{section}", p.launcher, p.num_processes)) is not None:
        raise SystemExit(status)  # the launcher ran num_processes ranks of this stage
    return Inputs(urls, notes, world)


def load_trainable(p: EngineParams, start: Path) -> Policy:
    """The starting policy on the stage's device, with its dropout and gradient checkpointing."""
    policy = load_policy(start, resolve_device(p.device))
    set_dropout(policy, p.dropout)
    if p.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    return policy


def make_backend(p: EngineParams, policy: Policy, total_steps: int, grad_accum: int, micro_batch: int) -> Backend:
    """Plain PyTorch under `launcher: python`, else DeepSpeed with the section's ZeRO config."""
    device = policy.device
    precision = p.precision if p.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    optim = OptimConfig(
        lr=p.lr, weight_decay=p.weight_decay, grad_clip=p.grad_clip, warmup_steps=p.warmup_steps, total_steps=total_steps,
        schedule=p.schedule, min_lr_ratio=p.min_lr_ratio, grad_accum=grad_accum, precision=precision,
    )  # fmt: skip
    options = {"device": device} if p.launcher == "python" else {"micro_batch_size": micro_batch, "zero": p.deepspeed}
    return build_backend("plain" if p.launcher == "python" else "deepspeed", policy, optim, **options)


def vocabulary(inputs: Inputs) -> frozenset[str]:
    """The tags the train annotations draw from (what a caption may mention without being wrong)."""
    return tag_vocabulary(r.tags for r in inputs.notes["train"].values())


def val_set(p: EngineParams, inputs: Inputs, count: int) -> tuple[list[TrainSample], list[EvalSample], str]:
    """`count` (the `val_samples` param) val samples evenly spread over the split, as eval samples,
    and the most frequent train degradation text (the constant answer the model must beat)."""
    stream = ShardStream(inputs.urls["val"], inputs.notes["val"], 1, p.seed, shuffle=False, per_rank=False)
    val = evenly_spaced(list(stream), count)
    tags = vocabulary(inputs)
    constant = most_frequent(r.degradation for r in sorted(inputs.notes["train"].values(), key=lambda r: r.key))
    return val, [EvalSample(s.lr, truth(s, tags)) for s in val], constant


def whole(backend: Backend, start: Path) -> Policy | None:
    """The trained weights in a whole policy on rank 0, None on the others: ZeRO-3 leaves each
    rank only a shard of the weights (a collective: every rank calls it)."""
    weights = backend.full_state_dict()
    if not backend.is_main:
        return None
    model = load_policy(start, backend.device)
    model.load_state_dict(weights)
    return model


def fingerprint(params: Params, section: str, start: Path, inputs: Inputs) -> dict:
    """What makes two runs the same run (a checkpoint of another is never resumed from): the
    section's params but where checkpoints go and the device, rollout and rewards, the bytes of
    the starting policy and the annotations, and the shards."""
    own = getattr(params, section).model_dump(exclude={"checkpoint_dir", "keep_last", "checkpoint_interval", "device"})
    digest = hashlib.sha256()
    for path in [*sorted(start.rglob("*")), *sorted(ANNOTATIONS.glob("*.jsonl"))]:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    shards = {split: [(u, Path(u).stat().st_size if Path(u).is_file() else None) for u in us] for split, us in inputs.urls.items()}
    return {section: own, "rollout": params.rollout.model_dump(), "rewards": params.rewards.model_dump(),
            "inputs": digest.hexdigest(), "shards": shards, "world_size": inputs.world}  # fmt: skip


def checkpoints(params: Params, section: str, start: Path, inputs: Inputs) -> Checkpoints:
    """The stage's checkpoint folder, bound to this run's fingerprint."""
    p = getattr(params, section)
    return Checkpoints(p.checkpoint_dir, fingerprint(params, section, start, inputs), p.keep_last)
