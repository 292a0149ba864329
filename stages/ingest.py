"""Stage `ingest`: mirror the photo source (params `data.source`) into data/raw.

Always runs (`always_changed` in dvc.yaml) so new photos are seen by a plain `dvc repro`, and is
cheap when nothing changed: only new or changed files are fetched, vanished ones removed, so an
unchanged source leaves data/raw byte-identical and every stage below it cached. Files data/raw
already holds are never fetched again, even on a fresh worker that restored data/raw from DVC.
`metrics/ingest.json` lists the photos and the source names refused as unsafe.
"""

from __future__ import annotations

import json
from pathlib import Path

from realsr_r1.atomic import write_json
from realsr_r1.config import Params
from realsr_r1.data.sources import SIDECAR, SourceError, sync_source
from stages.common import UsageError, run_stage

RAW = Path("data/raw")
STATE = Path("data/.ingest-state.json")  # fingerprints of the last sync on this machine: a fast path only
REPORT = Path("metrics/ingest.json")


def main(params: Params) -> None:
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    try:
        sync = sync_source(params.data.source, params.data.extensions, RAW, state, params.data.download_workers)
    except SourceError as err:
        raise UsageError(str(err)) from None
    write_json(STATE, sync.state)
    # a function of the source alone (no counts of this run's copies): identical bytes when nothing changed
    write_json(
        REPORT,
        {
            "photos": sum(name != SIDECAR for name in sync.state),
            "sidecar": SIDECAR in sync.state,
            "refused": sync.refused,
        },
    )


if __name__ == "__main__":
    run_stage(main)
