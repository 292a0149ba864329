"""Stage `annotate`: the VLCoT text targets and tags of every shard sample.

Reads `data/shards/{train,val}` and the backend chosen in params (`sidecar`: data/raw/annotations.json;
`vlm`: a transformers model, cached by GT content hash), writes `data/annotations/{train,val}.jsonl`
(records joined to the samples by key) and `metrics/annotate.json` (counts per split:
annotated, cached, failed, plus the failures). Unannotated samples fail the stage unless
`annotate.allow_failures` is true.
"""

from __future__ import annotations

import logging
from pathlib import Path

from realsr_r1.annotate.batch import annotate_samples, make_backend
from realsr_r1.annotate.records import write_records
from realsr_r1.annotate.sidecar import SidecarError
from realsr_r1.annotate.vlm import VlmError
from realsr_r1.atomic import write_json
from realsr_r1.config import Params
from realsr_r1.data.shards import read_samples, shard_paths
from stages.common import UsageError, run_stage

log = logging.getLogger("stages.annotate")

SHARDS = Path("data/shards")
OUT = Path("data/annotations")
REPORT = Path("metrics/annotate.json")  # counts for `dvc metrics`; tracked by git
SPLITS = ("train", "val")
CHUNK = 64


def main(params: Params) -> None:
    cfg = params.annotate
    if not any(shard_paths(SHARDS / split) for split in SPLITS):
        raise UsageError(f"no shards under {SHARDS}/{{train,val}}: run the synthesize stage first")
    try:
        backend = make_backend(cfg)
    except (SidecarError, VlmError) as err:
        raise UsageError(str(err)) from None

    report: dict[str, object] = {"backend": cfg.backend}
    for split in SPLITS:
        result = annotate_samples(read_samples(SHARDS / split), backend, CHUNK, desc=f"annotate {split}")
        write_records(OUT / f"{split}.jsonl", result.records)
        report[split] = {**result.counts, "failures": result.failures}
        log.info("%s: %s", split, ", ".join(f"{n} {k}" for k, n in result.counts.items()))
    totals = {k: sum(report[s][k] for s in SPLITS) for k in ("annotated", "cached", "failed")}
    report["total"] = totals
    write_json(REPORT, report)

    if totals["failed"] and not cfg.allow_failures:
        first = next(f for s in SPLITS for f in report[s]["failures"])
        raise UsageError(
            f"{totals['failed']} sample(s) not annotated (first: {first['key']}: {first['error']}); "
            f"see {REPORT} or set annotate.allow_failures"
        )


if __name__ == "__main__":
    run_stage(main)
