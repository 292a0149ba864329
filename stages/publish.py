"""Stage `publish`: bundle the trained artifacts and upload them as a checksummed S3 release.

Recipe: read the metrics -> build `models/release/` (artifacts, metrics, MODEL_CARD.md whose
provenance comes from dvc.lock) -> record what the bundle holds in `metrics/publish.json` ->
if a bucket is configured, ask the gate (publish only if `publish.metric` improved on the
latest release) -> upload with the manifest last. The bundle and the metrics file depend only
on the run's inputs, never on the destination (the checkout stays as committed after a
publish); the decision and its reason go to the log, the release itself to the bucket.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path, PurePosixPath

import yaml

from realsr_r1.atomic import atomic_dir, write_json, write_text
from realsr_r1.config import Params
from realsr_r1.release import (
    CARD,
    BundleError,
    Decision,
    assemble,
    checkpoints,
    gate,
    lookup,
    model_card,
    read_metrics,
)
from realsr_r1.storage import ReleaseError, ReleaseStore, build_manifest
from stages.common import UsageError, run_stage

log = logging.getLogger("stages.publish")

BUNDLE = Path("models/release")
DECISION = Path("metrics/publish.json")
LOCK = Path("dvc.lock")
BUCKET_ENV = "REALSR_RELEASE_BUCKET"


def main(params: Params) -> None:
    p = params.publish
    root = Path.cwd()
    try:
        metrics, metric_files = read_metrics(p.metrics, root)
        bucket = p.bucket or os.environ.get(BUCKET_ENV, "")
        store = ReleaseStore(bucket) if bucket else None
        with atomic_dir(BUNDLE) as tmp:
            included = assemble(root, p.artifacts, metric_files, tmp)
            made_by = producers(LOCK, [*included, *(f.relative_to(root).as_posix() for f in metric_files)])
            write_text(tmp / CARD, model_card(p.name, included, metrics, tmp, made_by))
        log.info("bundle %s: %s", BUNDLE, ", ".join(included))
        manifest = build_manifest(BUNDLE, p.name, "-")["files"]
        write_json(
            DECISION,
            {
                "files": len(manifest),
                "bytes": sum(m["size"] for m in manifest.values()),
                "policy_checkpoints": checkpoints(list(manifest)),
                "metric": p.metric,
                "candidate": lookup(metrics, p.metric) if p.metric else None,
            },
        )
        latest = store.latest(p.name) if store else None
        version = p.version or (store.next_version(p.name) if store else "")

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


def _same_content(published: dict[str, dict], bundle: Path) -> bool:
    """Same files and checksums as a published release (the card included: it holds no date)."""
    current = build_manifest(bundle, "-", "-")["files"]
    sums = lambda files: {k: v["sha256"] for k, v in files.items()}
    return sums(published) == sums(current)


def producers(lock: Path, paths: list[str]) -> dict[str, str]:
    """Which stage wrote each path, as the run's dvc.lock records it (params.yaml: the params)."""
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    except FileNotFoundError:
        stages = {}
    except yaml.YAMLError:
        raise UsageError(f"{lock}: not valid YAML") from None

    def made(rel: str) -> str | None:
        if rel == "params.yaml":
            return "the pipeline's params (every stage's settings)"
        for name, entry in stages.items():
            for out in entry.get("outs") or []:
                if PurePosixPath(rel).is_relative_to(out["path"]):
                    return f"stage `{name}` (`{entry.get('cmd', '')}`; dvc.lock md5 {out.get('md5', '?')[:12]})"
        return None

    return {rel: m for rel in paths if (m := made(rel))}


if __name__ == "__main__":
    run_stage(main)
