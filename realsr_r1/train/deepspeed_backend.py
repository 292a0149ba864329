"""The DeepSpeed backend: ZeRO-2 / ZeRO-3 data parallelism behind the `Backend` protocol.

The loop calls the policy directly (ZeRO-3's hooks gather each submodule's weights as it runs)
and hands the loss to `backward`/`step`; DeepSpeed owns gradient averaging over ranks, the
accumulation boundary, clipping and the sharded checkpoint. The optimizer and LR schedule are the
plain backend's (`param_groups`, `lr_factor`), passed in, so both engines step the same numbers.
bf16 is torch autocast over fp32 weights (DeepSpeed's `torch_autocast`), as on the plain engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import torch

from realsr_r1.train.backend import OptimConfig, lr_factor
from realsr_r1.train.plain import param_groups
from realsr_r1.train.zero import zero_config

if not torch.cuda.is_available():  # before deepspeed picks its accelerator: CPU + gloo
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402
import deepspeed.comm as dist  # noqa: E402
from deepspeed.accelerator import get_accelerator  # noqa: E402
from deepspeed.runtime.base_optimizer import ZeROOptimizer  # noqa: E402
from deepspeed.utils import safe_get_full_fp32_param  # noqa: E402

log = logging.getLogger(__name__)

TAG = "state"  # the one checkpoint tag inside a checkpoint directory (the loop names directories)


def ds_config(base: dict[str, Any], optim: OptimConfig, micro_batch_size: int) -> dict[str, Any]:
    """The ZeRO file plus what `OptimConfig` decides: batch, accumulation, clipping, precision."""
    config = dict(base)
    config.update(
        train_micro_batch_size_per_gpu=micro_batch_size,
        gradient_accumulation_steps=optim.grad_accum,
        gradient_clipping=optim.grad_clip or 0.0,  # 0: off
        zero_allow_untested_optimizer=True,  # torch's AdamW, the plain backend's optimizer
    )
    if optim.precision == "bf16":
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config


def init_distributed() -> None:
    """Join the process group the launcher (deepspeed / torchrun) described in the environment;
    a plain `python` run becomes rank 0 of 1 on a free loopback port."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(port))
    cpu = get_accelerator().device_name() == "cpu"
    deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl", auto_mpi_discovery=False)


class DeepSpeedBackend:
    """One rank of a DeepSpeed run; `model` is the policy the loop keeps calling directly."""

    def __init__(
        self, model: torch.nn.Module, optim: OptimConfig, zero: str | Path = "zero2", micro_batch_size: int = 1
    ) -> None:
        path, base = zero_config(zero)
        init_distributed()
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        accel = get_accelerator()
        if accel.device_name() == "cpu":
            self.device = torch.device("cpu")
        else:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            accel.set_device(local)
            self.device = torch.device(accel.device_name(), local)
        self.optim = optim
        model.to(self.device)
        optimizer = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(optim, step))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config(base, optim, micro_batch_size)
        )
        self.model = self.engine.module
        if self.is_main:
            log.info("DeepSpeed ZeRO-%d (%s) on %d x %s", self.engine.zero_optimization_stage(), path.name,
                     self.world_size, self.device.type)  # fmt: skip

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> Any:
        if self.optim.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # what `engine.forward` does first and the loop, calling the policy itself, skips: without
        # it ZeRO-3 overwrites (not accumulates) the gradients of earlier micro-batches
        if isinstance(self.engine.optimizer, ZeROOptimizer):
            self.engine.optimizer.clear_backward_seen_flag()
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps itself

    def step(self) -> dict[str, float] | None:
        boundary = self.engine.is_gradient_accumulation_boundary()
        lr = self.scheduler.get_last_lr()[0]  # the rate this step applies
        self.engine.step()  # off the boundary: only counts the micro-batch
        if not boundary:
            return None
        norm = self.engine.get_global_grad_norm()
        return {"grad_norm": float(norm) if norm is not None else float("nan"), "lr": float(lr)}

    def save(self, path: Path) -> None:
        """DeepSpeed's own layout under `path/state/` (model, per-rank optimizer shards, scheduler)."""
        self.engine.save_checkpoint(str(path), tag=TAG, save_latest=False)

    def load(self, path: Path) -> None:
        if not (Path(path) / TAG).is_dir():
            raise FileNotFoundError(f"{path}: not a DeepSpeed checkpoint (no '{TAG}' folder)")
        try:
            loaded, _ = self.engine.load_checkpoint(str(path), tag=TAG)
        except RuntimeError as err:  # e.g. weights of another model size
            raise ValueError(f"{path}: checkpoint does not fit this model ({str(err).splitlines()[0]})") from err
        if loaded is None:
            raise FileNotFoundError(f"{path}: DeepSpeed could not load this checkpoint")

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 weights gathered from the optimizer's shards (a collective: every rank calls it);
        on rank 0 the whole state dict, on the others an empty one."""
        module = self.engine.module
        out: dict[str, torch.Tensor] = {}
        for name, param in module.named_parameters():
            full = safe_get_full_fp32_param(param)  # ZeRO-3: all-gathers the shards
            if self.is_main:
                out[name] = (param.detach() if full is None else full).detach().to("cpu", torch.float32).clone()
        if self.is_main:
            buffers = dict(module.named_buffers())
            out.update({k: buffers[k].detach().cpu().clone() for k in module.state_dict() if k not in out and k in buffers})
        return out

    def barrier(self) -> None:
        dist.barrier()

    def all_reduce_mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size
