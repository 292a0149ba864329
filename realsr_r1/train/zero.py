"""The ZeRO config files: `configs/deepspeed/zero{2,3}.json` or a JSON file of one's own.

Kept apart from the DeepSpeed backend (which imports DeepSpeed) so a stage can check the file
its params name before it starts any process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
# what the run's params decide; a DeepSpeed config file that sets them is refused, not silently overridden
OWNED_KEYS = (
    "optimizer", "scheduler", "fp16", "bf16", "torch_autocast", "gradient_clipping", "train_batch_size",
    "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
)  # fmt: skip


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed config file that is missing, unreadable or sets what the params own."""


def zero_config(name_or_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """`zero2` / `zero3` (under configs/deepspeed/) or a path to a JSON file -> (path, dict)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DeepSpeedConfigError(f"{path}: cannot read the DeepSpeed config ({err})") from err
    if not isinstance(config, dict):
        raise DeepSpeedConfigError(f"{path}: a DeepSpeed config is a JSON object")
    for key in OWNED_KEYS:
        if key in config:
            raise DeepSpeedConfigError(f"{path}: key '{key}' is set by the run's params (sft), remove it here")
    return path, config
