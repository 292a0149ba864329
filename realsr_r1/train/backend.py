"""The training backend: what the loop needs from plain PyTorch or DeepSpeed, and nothing more.

One loop (SFT now, GRPO next) drives either backend through this protocol, so a run on one CPU
and a ZeRO-3 run on many GPUs share the loop, the checkpoints' layout and the logging. The
policy is called directly (`policy.score(...)`); the backend owns backward, the optimizer step
(with gradient accumulation, clipping, the LR schedule and mixed precision), the distributed
state and the training-state checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + warm-up then constant/cosine LR, as both backends build it."""

    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global grad norm; None: off
    warmup_steps: int = 0
    total_steps: int = 1  # optimizer steps (after accumulation)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: Literal["fp32", "bf16"] = "fp32"


class Backend(Protocol):
    """One training process's view of the run (rank 0 of 1 for plain PyTorch on one device)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...

    def autocast(self) -> Any:
        """Context manager for the forward pass (bf16 autocast where configured, else a no-op)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro-batch (scaled by 1 / grad_accum)."""

    def step(self) -> dict[str, float] | None:
        """After a micro-batch: at an accumulation boundary clip, step optimizer and scheduler,
        zero grads and return {"grad_norm", "lr"}; otherwise None."""

    def save(self, path: Path) -> None:
        """Write the backend's training state (weights, optimizer, scheduler) into the directory
        `path`; every rank calls it. The caller adds the loop's own state (`Checkpoints`) and makes
        the directory appear atomically (write to a temp dir, then rename)."""

    def load(self, path: Path) -> None:
        """Restore what `save` wrote into this backend."""

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The consolidated model weights (on rank 0; gathered from ZeRO shards where needed), for
        `save_pretrained` of the final model."""

    def barrier(self) -> None: ...

    def all_reduce_mean(self, value: float) -> float:
        """Mean of a scalar over ranks (for logging)."""


def lr_factor(config: OptimConfig, step: int) -> float:
    """LR multiplier after `step` optimizer steps: linear warm-up, then constant or cosine to the floor.

    One function for both backends, so a run's LR curve does not depend on where it ran."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(1, config.total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_backend(kind: Literal["plain", "deepspeed"], model: torch.nn.Module, config: OptimConfig, **options: Any) -> Backend:
    """The backend named `kind` around `model`; DeepSpeed is imported only when asked for.

    plain: `device` (torch.device); deepspeed: the options its backend documents (e.g. its
    config file). Either way the loop sees a `Backend`."""
    if kind == "plain":
        from realsr_r1.train.plain import PlainBackend

        return PlainBackend(model, config, **options)
    if kind == "deepspeed":
        from realsr_r1.train.deepspeed_backend import DeepSpeedBackend

        return DeepSpeedBackend(model, config, **options)
    raise ValueError(f"training backend {kind!r}: expected plain or deepspeed")
