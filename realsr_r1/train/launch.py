"""Run a training stage as N processes: the stage re-executes itself under `deepspeed` or `torchrun`.

`dvc repro sft` starts one `python -m stages.sft`; when the params ask for another launcher, that
process hands over to the launcher, which starts `num_processes` ranks of the same module (each
seeing the launcher's RANK / LOCAL_RANK / WORLD_SIZE and so not relaunching), and exits with
their status. A stage started by a launcher by hand (2 nodes with a hostfile) runs as is.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import Literal

import torch

log = logging.getLogger(__name__)

Launcher = Literal["python", "deepspeed", "torchrun"]


def under_launcher() -> bool:
    """True inside a rank started by deepspeed / torchrun (they set LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size(launcher: Launcher, num_processes: int) -> int:
    """The run's process count: the launcher's WORLD_SIZE inside one (e.g. 2 nodes started by
    hand), else what `relaunch` will start."""
    if launcher == "python":
        return 1
    return int(os.environ["WORLD_SIZE"]) if under_launcher() else num_processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(module: str, launcher: Launcher, num_processes: int, args: list[str] | None = None) -> list[str]:
    """The command line that starts `num_processes` ranks of `python -m module args` on this node.

    On a machine without CUDA the ranks are CPU processes talking over gloo (DeepSpeed's `cpu`
    accelerator); `--num_gpus` then counts processes, not devices."""
    args = list(args or [])
    if launcher == "deepspeed":
        return [
            sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_processes),
            "--master_port", str(free_port()), "--no_local_rank", "--module", module, *args,
        ]  # fmt: skip
    if launcher == "torchrun":
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes),
            "-m", module, *args,
        ]  # fmt: skip
    raise ValueError(f"launcher '{launcher}' starts no processes (use deepspeed or torchrun)")


def relaunch(module: str, launcher: Launcher, num_processes: int, args: list[str] | None = None) -> int | None:
    """Hand this process over to `launcher` unless it already runs under one or needs none.

    Returns the launcher's exit status (the caller exits with it), or None: carry on here."""
    if launcher == "python" or under_launcher():
        return None
    cmd = launch_command(module, launcher, num_processes, args)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    log.info("launching %d processes: %s", num_processes, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode
