"""Stage `ingest`: mirror the photo source (params `data.source`) into data/raw.

Incremental: only new or changed files are fetched, vanished ones removed, so an unchanged
source leaves data/raw byte-identical and every stage below it cached. `make pipeline` and the
`grpo/nightly` deployment force this stage so that new photos are picked up.
"""

from __future__ import annotations

import json
from pathlib import Path

from realsr_r1.atomic import write_json
from realsr_r1.config import Params
from realsr_r1.data.sources import SourceError, sync_source
from stages.common import UsageError, run_stage

RAW = Path("data/raw")
STATE = Path("data/.ingest-state.json")  # fingerprints of the last sync; not a DVC output


def main(params: Params) -> None:
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    try:
        state = sync_source(params.data.source, params.data.extensions, RAW, state)
    except SourceError as err:
        raise UsageError(str(err)) from None
    write_json(STATE, state)


if __name__ == "__main__":
    run_stage(main)
