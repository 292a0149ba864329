"""A checkpoint's own record of what trained it (`training.json` beside the weights).

`init_policy` writes an empty record; each training stage appends itself before saving. So any
consumer (`realsr upscale`, a release card) can say "untrained" from the checkpoint alone
rather than guess from a directory name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_FILE = "training.json"


@dataclass(frozen=True)
class TrainingRecord:
    """The training runs a checkpoint went through, in order; empty: the initial weights."""

    runs: tuple[dict[str, Any], ...] = ()

    @property
    def trained(self) -> bool:
        return bool(self.runs)

    def then(self, stage: str, **info: Any) -> TrainingRecord:
        """This record plus one run of `stage` (e.g. `then("sft", steps=1200)`)."""
        return TrainingRecord(self.runs + ({"stage": stage, **info},))

    def describe(self) -> str:
        if not self.runs:
            return "untrained (the initial random weights written by init-policy)"
        return "trained by " + ", then ".join(str(r["stage"]) for r in self.runs)


def write_record(record: TrainingRecord, directory: Path) -> None:
    (directory / RECORD_FILE).write_text(json.dumps({"runs": list(record.runs)}, indent=2, sort_keys=True) + "\n")


def read_record(directory: Path) -> TrainingRecord | None:
    """The record in `directory`; None for a checkpoint written before records existed."""
    path = directory / RECORD_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        runs = tuple(raw["runs"])
        if not all(isinstance(r, dict) and "stage" in r for r in runs):
            raise TypeError("each run needs a 'stage'")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a training record ({exc})") from exc
    return TrainingRecord(runs)
