"""Atomic outputs: write to a temporary sibling, then rename over the target.

A killed process leaves at worst a `.tmp-*` (or `.old-*`) sibling, never a half-written output
that a later run could take for finished; the previous output stays intact until the rename.
`sweep_stale` removes such leftovers; every stage calls it on its outputs when it starts.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory; on success it replaces `target` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty, key-sorted JSON (stable bytes for DVC), written atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def stale_temporaries(target: str | Path) -> list[Path]:
    """The temporary siblings `atomic_dir`/`write_bytes` make for `target` (and, inside a target
    directory, for its files), which only a killed writer leaves behind."""
    target = Path(target)
    name = glob.escape(target.name)
    found = [*target.parent.glob(f".{name}.tmp-*"), *target.parent.glob(f".{name}.old-*")]
    if target.is_dir():
        found += [p for p in target.rglob(".*.tmp-*") if p.name.startswith(".")]
    return sorted(found)


def sweep_stale(targets: Iterable[str | Path]) -> list[Path]:
    """Remove the stale temporaries of `targets`; call it only while no other writer of them runs."""
    removed = []
    for target in targets:
        for path in stale_temporaries(target):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
