"""Stage `publish`: bundle the trained artifacts and upload them as a checksummed S3 release.

Recipe: read the metrics -> build `models/release/` (artifacts, metrics, MODEL_CARD.md) ->
if a bucket is configured, ask the gate (publish only if `publish.metric` improved on the
latest release) -> upload with the manifest last -> record the decision in
`metrics/publish.json`. With no bucket the bundle is built and the decision says so.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from realsr_r1.atomic import atomic_dir, write_json, write_text
from realsr_r1.config import Params
from realsr_r1.release import CARD, BundleError, Decision, assemble, gate, model_card, read_metrics
from realsr_r1.storage import ReleaseError, ReleaseStore, build_manifest
from stages.common import UsageError, run_stage

log = logging.getLogger("stages.publish")

BUNDLE = Path("models/release")
DECISION = Path("metrics/publish.json")
BUCKET_ENV = "REALSR_RELEASE_BUCKET"


def main(params: Params) -> None:
    p = params.publish
    root = Path.cwd()
    try:
        metrics, metric_files = read_metrics(p.metrics, root)
        bucket = p.bucket or os.environ.get(BUCKET_ENV, "")
        store = ReleaseStore(bucket) if bucket else None
        latest = store.latest(p.name) if store else None
        version = p.version or (store.next_version(p.name) if store else "unreleased")
        with atomic_dir(BUNDLE) as tmp:
            included = assemble(root, p.artifacts, metric_files, tmp)
            write_text(tmp / CARD, model_card(p.name, version, included, metrics, tmp))
        log.info("bundle %s: %s", BUNDLE, ", ".join(included))

        if store is None:
            decision = Decision(
                False, f"no release bucket (publish.bucket or ${BUCKET_ENV}); bundle only", None, None
            )
        else:
            decision = gate(metrics, latest, p.metric, p.mode, p.min_delta, p.only_if_improved)
            if decision.publish and latest is not None and _same_content(latest.files, BUNDLE):
                decision = Decision(
                    False, f"identical to {latest.ref}", decision.candidate, decision.previous
                )
        ref = None
        if decision.publish:
            assert store is not None
            ref = store.upload(BUNDLE, p.name, version, metrics).ref
            log.info("published %s (%s)", ref, decision.reason)
        else:
            log.info("not published: %s", decision.reason)
    except BundleError as err:
        raise UsageError(str(err)) from None
    except ReleaseError as err:
        print(f"error: publish: {err}", file=sys.stderr)
        sys.exit(1)
    write_json(
        DECISION,
        {
            "published": decision.publish,
            "release": ref or "",
            "reason": decision.reason,
            "metric": p.metric,
            "candidate": decision.candidate,
            "previous": decision.previous,
        },
    )


def _same_content(published: dict[str, dict], bundle: Path) -> bool:
    """Same files and checksums as a published release, ignoring the dated model card."""
    current = build_manifest(bundle, "x", "x")["files"]
    strip = lambda files: {k: v["sha256"] for k, v in files.items() if k != CARD}
    return strip(published) == strip(current)


if __name__ == "__main__":
    run_stage(main)
