"""What the SFT and GRPO loops share: the state a resumed run needs, the data position, and
resuming from / writing `Checkpoints`.

A loop keeps everything it must carry across a kill in a `TrainState` (its own curves included);
`resume` puts the latest matching checkpoint back into the backend, the state and the RNGs, and
`checkpoint` writes them, so both loops end with the same weights whether or not they were killed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from realsr_r1.train.backend import Backend
from realsr_r1.train.checkpoint import Checkpoints, rng_state, set_rng_state
from realsr_r1.train.data import ShardStream, TrainSample, loader

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything besides the backend's state that a resumed run needs to continue identically."""

    step: int = 0  # steps done (SFT: optimizer steps; GRPO: rollout batches)
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of this epoch already consumed (the data position)
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per step
    val_curve: list[dict[str, float]] = field(default_factory=list)
    evals: dict[str, Any] = field(default_factory=dict)  # rollout evaluations by name ("early")


def epoch_batches(
    stream: ShardStream, state: TrainState, batch_size: int, workers: int, seed: int
) -> Iterator[list[TrainSample]]:
    """This epoch's batches after the data position; the worker seeds come from their own
    generator, not the global RNG, so creating the loader draws nothing the training uses."""
    stream.set_epoch(state.epoch)
    data = loader(stream, batch_size, workers, torch.Generator().manual_seed(seed * 100_003 + state.epoch))
    for index, batch in enumerate(data):
        if index >= state.batches_in_epoch:
            yield batch


def endless_batches(
    stream: ShardStream, state: TrainState, batch_size: int, workers: int, seed: int
) -> Iterator[list[TrainSample]]:
    """Batches epoch after epoch from the data position, advancing it as each batch is handed out."""
    while True:
        empty = True
        for batch in epoch_batches(stream, state, batch_size, workers, seed):
            empty = False
            state.batches_in_epoch += 1
            yield batch
        if empty and state.batches_in_epoch == 0:
            raise ValueError("the train stream yielded no sample")
        state.epoch += 1
        state.batches_in_epoch = 0


def resume(backend: Backend, model: torch.nn.Module, checkpoints: Checkpoints, seed: int) -> TrainState:
    """The state to continue from: the latest matching checkpoint's (weights, optimizer and RNGs
    restored), else a fresh one with the RNGs seeded by seed + rank."""
    path = checkpoints.check(model)
    if path is None:
        torch.manual_seed(seed + backend.rank)  # rank 0 of a plain run: the seed itself
        return TrainState()
    client = checkpoints.load(backend, path)
    state = TrainState(**client["state"])
    set_rng_state(client["rng"])
    log.info(
        "resumed from %s (step %d, epoch %d, batch %d)", path, state.step, state.epoch, state.batches_in_epoch
    )
    return state


def checkpoint(backend: Backend, model: torch.nn.Module, checkpoints: Checkpoints, state: TrainState) -> None:
    """Write `state`, this rank's RNGs and the backend's state as the checkpoint of `state.step`."""
    checkpoints.save(backend, model, state.step, {"state": vars(state).copy(), "rng": rng_state()})
