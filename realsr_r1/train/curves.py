"""Training curves as CSV (one row per step) for `dvc plots`, written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from realsr_r1.atomic import write_text


def write_csv(path: str | Path, rows: Sequence[dict[str, float]], columns: Sequence[str] | None = None) -> None:
    """Rows with the same keys -> a CSV with a header (an empty file with no rows); `columns`
    picks and orders the columns written (default: all), so one curve can feed several files."""
    out = io.StringIO()
    if rows:
        fields = list(columns) if columns is not None else list(rows[0])
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, out.getvalue())
