"""What this checkout has confirmed pushed: skip a `dvc push` that could only be a no-op.

After a successful push the stage's output hashes (from dvc.lock) are recorded under a key
made of the remote name and the DVC config files, in `.dvc/tmp/` (ignored by git and DVC).
A later push of the same stage is skipped only if the hashes and the remote config are the
same; anything changed, or a failed push (nothing recorded), pushes again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from realsr_r1.atomic import write_json

LEDGER = Path(".dvc/tmp/flow-pushed.json")


def outs_signature(repo: Path, stage: str) -> str | None:
    """A digest of the stage's outputs as dvc.lock records them (None: not in dvc.lock yet)."""
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return None
    entry = (lock.get("stages") or {}).get(stage)
    if not entry or not entry.get("outs"):
        return None
    outs = sorted((o["path"], o.get("md5") or o.get("hash") or "") for o in entry["outs"])
    return hashlib.sha256(json.dumps(outs).encode()).hexdigest()


def remote_key(repo: Path, remote: str | None) -> str:
    """The remote name plus the DVC config that resolves it: a config change means a new remote."""
    digest = hashlib.sha256((remote or "<default>").encode())
    for name in ("config", "config.local"):
        path = repo / ".dvc" / name
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


def _read(repo: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads((repo / LEDGER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def already_pushed(repo: Path, remote: str | None, stage: str) -> bool:
    sig = outs_signature(repo, stage)
    return sig is not None and _read(repo).get(remote_key(repo, remote), {}).get(stage) == sig


def record_push(repo: Path, remote: str | None, stage: str) -> None:
    sig = outs_signature(repo, stage)
    if sig is None:
        return
    ledger = _read(repo)
    ledger.setdefault(remote_key(repo, remote), {})[stage] = sig
    write_json(repo / LEDGER, ledger)
