"""The annotation record: what the `annotate` stage writes per shard sample, joined by key.

Stored as `data/annotations/{split}.jsonl`, one record per line, sorted by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from realsr_r1.atomic import write_text


@dataclass(frozen=True)
class AnnotationRecord:
    key: str  # the shard sample's __key__
    source: str  # the source photo (path relative to data/raw)
    degradation: str  # text of the ordered (operation, severity) list
    rough_understand: str  # description of the GT at 1/4 size (coarse)
    middle_understand: str  # at 1/2 size
    final_understand: str  # at full size (fine)
    tags: list[str] = field(default_factory=list)  # objects in the image: the understanding reward's truth


def write_records(path: str | Path, records: list[AnnotationRecord]) -> None:
    """Write records as JSON lines sorted by key, atomically."""
    lines = [json.dumps(asdict(r), sort_keys=True, ensure_ascii=False) for r in sorted(records, key=lambda r: r.key)]
    write_text(path, "".join(line + "\n" for line in lines))


def read_records(path: str | Path) -> list[AnnotationRecord]:
    """Read a JSON-lines annotation file; errors name the file and line."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(AnnotationRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}:{number}: bad annotation record: {err}") from None
    return records
