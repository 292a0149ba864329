"""Load a saved policy directory, whichever backbone it holds.

A policy directory has `policy.json`; its `backbone` key names the implementation (absent in
checkpoints of the tiny Llama, the default). Each backbone is imported only when a directory
holds one, so loading the tiny policy never pulls in Janus.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from realsr_r1.policy.interface import Policy

CONFIG_FILE = "policy.json"
BACKBONES = ("tiny_llama", "janus")


class PolicyLoadError(FileNotFoundError):
    """A policy directory that is missing or incomplete; the message names the path."""


def read_policy_config(path: str | Path) -> dict:
    """`policy.json` of a policy directory; a missing or unreadable one is one line naming it."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise PolicyLoadError(f"{path}: not a policy checkpoint (missing {CONFIG_FILE})")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise PolicyLoadError(f"{file}: not valid JSON ({err})") from None
    backbone = raw.get("backbone", "tiny_llama")
    if backbone not in BACKBONES:
        raise PolicyLoadError(f"{file}: unknown backbone {backbone!r} (expected one of {', '.join(BACKBONES)})")
    return raw


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> Policy:
    """Load a saved policy directory (the backbone named in its config) onto `device`."""
    if read_policy_config(path).get("backbone", "tiny_llama") == "janus":
        from realsr_r1.policy.janus import JanusPolicy

        return JanusPolicy.from_pretrained(path).to(device)
    from realsr_r1.policy.tiny import TinyPolicy

    return TinyPolicy.from_pretrained(path).to(device)
