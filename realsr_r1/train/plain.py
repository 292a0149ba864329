"""The plain-PyTorch backend: one process, CPU or one GPU; AdamW, warm-up + constant/cosine LR,
gradient accumulation, clipping, bf16 autocast on CUDA, and a training state saved as
safetensors (weights) plus a `torch.save` of the optimizer and scheduler states, which `load`
reads back with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from realsr_r1.train.backend import OptimConfig, lr_factor

WEIGHTS = "model.safetensors"
STATE = "state.pt"


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: biases, norms and embeddings' 1-D parameters are not shrunk (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class PlainBackend:
    """Rank 0 of 1: the model on `device`, stepped by AdamW every `grad_accum` micro-batches."""

    rank = 0
    world_size = 1

    def __init__(self, model: torch.nn.Module, config: OptimConfig, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        if config.precision == "bf16" and self.device.type != "cuda":
            raise ValueError("precision bf16 needs a CUDA device (on the CPU use fp32)")
        self.model = model.to(self.device)
        self.config = config
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps, fused=fused
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(config, step))
        self.micro = 0  # micro-batches since the last optimizer step

    @property
    def is_main(self) -> bool:
        return True

    def autocast(self) -> Any:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.config.grad_accum).backward()
        self.micro += 1

    def step(self) -> dict[str, float] | None:
        if self.micro < self.config.grad_accum:
            return None
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.micro = 0
        return {"grad_norm": float(norm), "lr": float(lr)}

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(path / WEIGHTS))  # tied weights (Janus' lm_head) are stored once
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save(state, path / STATE)

    def load(self, path: Path) -> None:
        load_model(self.model, str(path / WEIGHTS), device=str(self.device))
        state = torch.load(path / STATE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = 0

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def barrier(self) -> None:
        return None

    def all_reduce_mean(self, value: float) -> float:
        return value
