"""Training curves as CSV (one row per step) for `dvc plots`, written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from realsr_r1.atomic import write_text


def write_csv(path: str | Path, rows: Sequence[dict[str, float]]) -> None:
    """Rows with the same keys -> a CSV with a header (an empty file with no rows)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, out.getvalue())
