"""Stage `prepare`: validate the photos in data/raw and cut GT crops into data/prepared.

Outputs: `{train,val}/KEY.png`, `crops.jsonl` (one record per crop: key, split, source, box)
and `report.json` (accepted photos, rejected ones with their reason, crop counts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.data.images import encode_png
from realsr_r1.data.prepare import PrepareReport, iter_folder, prepare_photos, resolve_workers
from stages.common import UsageError, run_stage

RAW = Path("data/raw")
OUT = Path("data/prepared")
log = logging.getLogger("stages.prepare")


def main(params: Params) -> None:
    report = PrepareReport()
    photos = iter_folder(RAW, params.data.extensions)
    with atomic_dir(OUT) as tmp:
        records = []
        workers = resolve_workers(params.prepare.workers)
        for crop in prepare_photos(photos, params.prepare, params.seed, report, workers):
            (tmp / crop.split).mkdir(exist_ok=True)
            (tmp / crop.split / f"{crop.key}.png").write_bytes(encode_png(crop.image))
            records.append({"key": crop.key, "split": crop.split, **crop.meta})
        for rejected in report.rejected:
            log.warning("rejected %s: %s", rejected["file"], rejected["reason"])
        if not records:
            raise UsageError(f"no valid photo in {RAW} ({len(report.rejected)} rejected, see the log)")
        records.sort(key=lambda r: r["key"])
        (tmp / "crops.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        write_json(tmp / "report.json", report.as_dict())
    log.info("%d photos accepted, %d rejected, crops %s", len(report.accepted), len(report.rejected), report.splits)


if __name__ == "__main__":
    run_stage(main)
