"""AdamW and its LR schedule, built one way for every backend.

The plain and the DeepSpeed backends both call `build_optimizer`, so the same `OptimConfig`
gives the same parameter groups and the same learning rate at every step on either engine.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

from realsr_r1.train.backend import OptimConfig


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Multiplier of `optim.lr` for optimizer step `step` (0-based): linear warm-up to 1, then
    constant or cosine down to `min_lr_ratio` at `total_steps`."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.total_steps - optim.warmup_steps))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embeddings only; biases, norms and 1-D params are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over `param_groups` and the `lr_factor` schedule (stepped once per optimizer step)."""
    opt = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps)
    return opt, LambdaLR(opt, partial(lr_factor, optim=optim))
