"""Training checkpoints: every N steps, the last K kept, each one appearing whole or not at all.

`DIR/step-0000100/` holds what the backend saves (weights, optimizer, scheduler), each rank's
own client state (`client-rank0.pt`, ...: RNG states and data position, which differ between
ranks, and the curves so far), plus `run.json`: the run's fingerprint and the model's parameter
shapes. A checkpoint is written into a temporary sibling and renamed into place, so a process
killed at any moment (mid-step or mid-write) leaves the previous complete checkpoint as the
latest; the stale temporary is removed on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realsr_r1.atomic import write_json
from realsr_r1.train.backend import Backend

RUN_FILE = "run.json"
CLIENT_FILE = "client-rank{rank}.pt"  # one per rank
PREFIX = "step-"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint folder this run cannot resume from; the message names the file and key."""


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _tuples(value: Any) -> Any:
    """`random.setstate` wants tuples; a saved state may come back with lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run evaluation without moving the training RNGs, so evaluating never changes the trained weights."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """Every weight's full shape: under ZeRO-3 a rank holds a shard (or nothing) of a parameter,
    whose whole shape DeepSpeed keeps in `ds_shape`."""
    out = {name: list(t.shape) for name, t in model.state_dict().items()}
    for name, param in model.named_parameters(remove_duplicate=False):
        if hasattr(param, "ds_shape"):
            out[name] = list(param.ds_shape)
    return out


class Checkpoints:
    """The checkpoint folder of one run: `fingerprint` (a JSON-able dict) says which run it is."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any], keep_last: int) -> None:
        self.dir = Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        self.keep_last = keep_last

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporaries are never named `step-*`)."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.glob(PREFIX + "*") if p.is_dir() and (p / RUN_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))

    def check(self, model: torch.nn.Module) -> Path | None:
        """The checkpoint to resume from, or None. Another model's checkpoint is a CheckpointError;
        checkpoints of the same model under other training params are set aside (logged)."""
        for path in sorted(self.dir.glob(f".{PREFIX}*.tmp-*")) if self.dir.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
            log.warning("removed %s, left by an interrupted checkpoint write", path)
        done = self.complete()
        if not done:
            return None
        latest = done[-1]
        run = json.loads((latest / RUN_FILE).read_text())
        mine = shapes(model)
        theirs = run.get("shapes", {})
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                raise CheckpointError(
                    f"{latest / RUN_FILE}: written for another model ({name}: {theirs.get(name)} there, "
                    f"{mine.get(name)} here); remove {self.dir} or set the stage's checkpoint_dir elsewhere"
                )
        if run.get("fingerprint") != self.fingerprint:
            changed = sorted(
                k for k in set(self.fingerprint) | set(run.get("fingerprint", {}))
                if self.fingerprint.get(k) != run.get("fingerprint", {}).get(k)
            )
            log.warning("%s: checkpoints of other params (%s); starting over", self.dir, ", ".join(changed))
            for path in done:
                shutil.rmtree(path)
            return None
        return latest

    def save(self, backend: Backend, model: torch.nn.Module, step: int, client_state: dict[str, Any]) -> Path:
        """Write `step-N` (every rank calls this with its own `client_state`: tensors and plain
        containers), then drop all but the last `keep_last`."""
        final = self.dir / f"{PREFIX}{step:07d}"
        tmp = self.dir / f".{final.name}.tmp-{step}"  # one name every rank agrees on
        if backend.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        backend.barrier()
        backend.save(tmp)
        torch.save(client_state, tmp / CLIENT_FILE.format(rank=backend.rank))
        backend.barrier()
        if backend.is_main:
            write_json(tmp / RUN_FILE, {"fingerprint": self.fingerprint, "shapes": shapes(model), "step": step})
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.complete()[: -self.keep_last]:
                shutil.rmtree(old)
        backend.barrier()
        return final

    def load(self, backend: Backend, path: Path) -> dict[str, Any]:
        """Restore the backend's state from `path` and return this rank's client state."""
        client = path / CLIENT_FILE.format(rank=backend.rank)
        if not client.is_file():
            raise CheckpointError(f"{client}: not found (a checkpoint of fewer processes?); remove {self.dir} to start over")
        backend.load(path)
        return torch.load(client, map_location="cpu", weights_only=True)


def _fsync_tree(folder: Path) -> None:
    """Flush every file before the rename publishes the folder (a crash then finds it whole)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
