"""One rank of the DeepSpeed test run (`tests/test_deepspeed_backend.py` launches it as N processes).

Trains the saved tiny policy on the saved global micro-batches (this rank takes its rows), saves
a checkpoint half-way (`Checkpoints`, each rank with its own client state), trains on, gathers
the final weights; then, in a fresh engine, resumes from the checkpoint and trains the second
half again. Rank 0 writes both results and the final
policy (`save_pretrained`) for the test to compare with a plain single-process loop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from realsr_r1.policy.interface import TEACHER_FORCING, PromptBatch, SequenceBatch
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.train.backend import OptimConfig
from realsr_r1.train.checkpoint import Checkpoints
from realsr_r1.train.deepspeed_backend import DeepSpeedBackend


def rows(batch: SequenceBatch, rank: int, world: int) -> SequenceBatch:
    """This rank's contiguous share of a global micro-batch."""
    n = len(batch.completion_ids) // world
    sl = slice(rank * n, (rank + 1) * n)
    p = batch.prompt
    prompt = type(p)(p.input_ids[sl], p.uncond_ids[sl], p.lr[sl])
    return SequenceBatch(prompt, batch.completion_ids[sl], batch.completion_mask[sl])


def train(backend: DeepSpeedBackend, micro: list[tuple[SequenceBatch, int]], start: int, stop: int, accum: int) -> list[float]:
    """Optimizer steps [start, stop): loss = W * (-sum of own sampled log-probs) / global count, so
    DeepSpeed's mean over ranks equals the single-process loss of the whole micro-batch."""
    losses = []
    for step in range(start, stop):
        total = 0.0
        for m in range(accum):
            batch, count = micro[step * accum + m]
            mine = rows(batch, backend.rank, backend.world_size)
            with backend.autocast():
                scores = backend.model.score(mine, TEACHER_FORCING)
            loss = -scores.logprobs[scores.sampled_mask].sum() * backend.world_size / count
            backend.backward(loss)
            total += backend.all_reduce_mean(loss.item()) / accum
            info = backend.step()
            assert (info is not None) == (m == accum - 1), "step() reports exactly at the accumulation boundary"
        losses.append(total)
    return losses


def main(work: Path, zero: str) -> None:
    spec = json.loads((work / "spec.json").read_text())
    optim = OptimConfig(**{**spec["optim"], "betas": tuple(spec["optim"]["betas"])})
    with torch.serialization.safe_globals([SequenceBatch, PromptBatch]):  # the batches' own dataclasses, nothing else
        micro = torch.load(work / "batches.pt", weights_only=True)
    steps, half, accum = spec["steps"], spec["steps"] // 2, optim.grad_accum

    torch.manual_seed(0)
    backend = DeepSpeedBackend(TinyPolicy.from_pretrained(work / "init"), optim, zero, micro_batch_size=spec["rows"])
    losses = train(backend, micro, 0, half, accum)
    checkpoints = Checkpoints(work / "ckpt", {}, keep_last=1)
    saved = checkpoints.save(backend, backend.model, half, {"step": half, "losses": losses, "rank": backend.rank})
    losses += train(backend, micro, half, steps, accum)
    straight = backend.full_state_dict()

    resumed_backend = DeepSpeedBackend(TinyPolicy.from_pretrained(work / "init"), optim, zero, micro_batch_size=spec["rows"])
    client = checkpoints.load(resumed_backend, saved)
    assert client["rank"] == resumed_backend.rank, "each rank gets its own client state back"
    train(resumed_backend, micro, client["step"], steps, accum)
    resumed = resumed_backend.full_state_dict()

    if backend.is_main:
        final = TinyPolicy.from_pretrained(work / "init")
        final.load_state_dict(straight)
        final.save_pretrained(work / "final")
        torch.save({"straight": straight, "resumed": resumed, "client": client}, work / "result.pt")
        (work / "losses.json").write_text(json.dumps(losses))
    backend.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
