"""Stage `synthesize`: degrade every GT crop K times into WebDataset shards.

Outputs `data/shards/{train,val}/shard-%06d.tar` and `metrics/synthesize.json` (sample counts
and how often each operation occurs, for `dvc metrics`). Runs on `synthesize.workers` local
processes, or on a Dask cluster: `synthesize.dask_address`, else $REALSR_DASK_ADDRESS (which
an orchestrator sets without touching params); the shards are byte-identical either way.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import DASK_ENV, Params
from realsr_r1.data.images import decode_png
from realsr_r1.data.prepare import GtCrop
from realsr_r1.data.synthesis import DaskClusterError, synthesize_split
from stages.common import UsageError, run_stage

PREPARED = Path("data/prepared")
OUT = Path("data/shards")
METRICS = Path("metrics/synthesize.json")
log = logging.getLogger("stages.synthesize")


def dask_address(param: str) -> tuple[str, str]:
    """The scheduler to run on and where it came from: the param first, then $REALSR_DASK_ADDRESS."""
    if param.strip():
        return param.strip(), "synthesize.dask_address"
    env = os.environ.get(DASK_ENV, "").strip()
    return (env, f"${DASK_ENV}") if env else ("", "")


def load_crops(records: list[dict]) -> Iterator[GtCrop]:
    """GT crops of data/prepared, read lazily in the order of `records`."""
    for r in records:
        meta = {k: v for k, v in r.items() if k not in ("key", "split")}
        yield GtCrop(r["key"], r["split"], decode_png((PREPARED / r["split"] / f"{r['key']}.png").read_bytes()), meta)


def main(params: Params) -> None:
    index = PREPARED / "crops.jsonl"
    if not index.exists():
        raise UsageError(f"{index} not found: run the prepare stage first (dvc repro prepare)")
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    p = params.synthesize
    address, source = dask_address(p.dask_address)
    log.info("running on %s", f"the Dask cluster at {address} (from {source})" if address else "local processes")
    metrics: dict = {}
    start = time.perf_counter()
    with atomic_dir(OUT) as tmp:
        for split in ("train", "val"):
            split_records = sorted((r for r in records if r["split"] == split), key=lambda r: r["key"])
            (tmp / split).mkdir()
            try:
                metrics[split] = synthesize_split(
                    load_crops(split_records), len(split_records), tmp / split, p.per_image, p.degradation,
                    p.scale, params.seed, p.workers, p.shard_size, dask_address=address,
                )
            except DaskClusterError as err:
                raise UsageError(f"{source}: {err}") from None
    seconds = time.perf_counter() - start
    total = sum(m["samples"] for m in metrics.values())
    log.info("%d samples in %.1f s (%.1f pairs/s)", total, seconds, total / max(seconds, 1e-9))
    write_json(METRICS, metrics)


if __name__ == "__main__":
    run_stage(main)
