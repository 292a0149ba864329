"""What goes into a release and whether to publish it: the bundle, its model card, the gate.

The bundle is self-contained (weights, configs, tokenizers, metrics, MODEL_CARD.md); the
manifest with a sha256 per file is added by `storage` at upload. The gate compares one metric
of the candidate with the latest release so a nightly retrain publishes only improvements.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from realsr_r1.storage import MANIFEST, Release, build_manifest

CARD = "MODEL_CARD.md"


class BundleError(ValueError):
    """An artifact or metrics file that cannot be bundled; the message names the path."""


def read_metrics(paths: list[str], root: Path) -> tuple[dict[str, Any], list[Path]]:
    """Metrics JSON files (or folders of them) -> ({file stem: content}, files found)."""
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for entry in paths:
        p = root / entry
        found = sorted(p.rglob("*.json")) if p.is_dir() else ([p] if p.is_file() else [])
        for f in found:
            try:
                merged[f.stem] = json.loads(f.read_text())
            except json.JSONDecodeError as err:
                raise BundleError(f"{f}: not valid JSON ({err.msg}, line {err.lineno})") from None
            files.append(f)
    return merged, files


def lookup(metrics: dict[str, Any], dotted: str) -> float | None:
    """`evaluate.grpo.psnr_y` -> metrics["evaluate"]["grpo"]["psnr_y"] as a float, or None."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str
    candidate: float | None
    previous: float | None


def gate(
    metrics: dict[str, Any], latest: Release | None, metric: str, mode: str, min_delta: float, enabled: bool
) -> Decision:
    """Publish only if `metric` improves on the latest release by more than `min_delta`.

    With no evaluation yet (the metric is absent from the candidate) the first release is
    published, since there is nothing to regress from; later ones are held back, since an
    improvement cannot be shown.
    """
    value = lookup(metrics, metric) if metric else None
    if not enabled or not metric:
        return Decision(True, "gate disabled", value, None)
    if latest is None:
        return Decision(True, "first release of this name", value, None)
    previous = lookup(latest.metrics, metric)
    if value is None:
        return Decision(
            False,
            f"metric {metric} missing from this run; cannot show an improvement on {latest.ref}",
            None,
            previous,
        )
    if previous is None:
        return Decision(True, f"{latest.ref} has no {metric} to compare", value, None)
    gain = value - previous if mode == "max" else previous - value
    if gain > min_delta:
        return Decision(
            True,
            f"{metric} {value:.6g} improves on {latest.ref} ({previous:.6g}) by {gain:.6g} > {min_delta:g}",
            value,
            previous,
        )
    return Decision(
        False,
        f"{metric} {value:.6g} does not improve on {latest.ref} ({previous:.6g}) by more than {min_delta:g}",
        value,
        previous,
    )


def assemble(root: Path, artifacts: list[str], metric_files: list[Path], out: Path) -> list[str]:
    """Copy the artifacts that exist (keeping their relative paths) and the metrics into `out`."""
    included: list[str] = []
    out_resolved = out.resolve()
    for entry in artifacts:
        src = (root / entry).resolve()
        if not src.is_relative_to(root.resolve()):
            raise BundleError(f"publish.artifacts: {entry!r} is outside the repository")
        if out_resolved.is_relative_to(src) or src.is_relative_to(out_resolved):
            raise BundleError(f"publish.artifacts: {entry!r} overlaps the bundle folder {out}")
        if not src.exists():
            continue
        dst = out / entry
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        else:
            shutil.copy2(src, dst)
        included.append(entry)
    for f in metric_files:
        dst = out / f.resolve().relative_to(root.resolve())
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    if not included:
        raise BundleError(f"publish.artifacts: none of {artifacts} exists; nothing to release")
    return included


def model_card(name: str, version: str, included: list[str], metrics: dict[str, Any], bundle: Path) -> str:
    """A Markdown card: what the release is, its metrics, its files with sha256, how to use it."""
    manifest = build_manifest(bundle, name, version)
    lines = [
        f"# {name} {version}",
        "",
        "RealSR-R1 reasoning super-resolution checkpoint (VLCoT: degradation, understanding and",
        "coarse-to-fine images in one sequence), trained by cold-start SFT then VLCoT-GRPO.",
        "",
        f"- Built: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- Contents: {', '.join(included)}",
        f"- Get it: `realsr pull {name}@{version} -o {name}-{version}` (every sha256 is verified)",
        "- Licence notes: evaluation metrics come from pyiqa (non-commercial licence); training",
        "  photos are those of the params' `data.source`.",
        "",
        "## Metrics",
        "",
    ]
    flat = _flatten(metrics)
    if flat:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in flat.items()]
    else:
        lines.append("No metrics were recorded for this run.")
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {rel} | {m['size']} | `{m['sha256']}` |" for rel, m in manifest["files"].items()]
    lines += ["", f"The `{MANIFEST}` beside this card lists the same checksums (it is written last).", ""]
    return "\n".join(lines)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(node, float):
        return {prefix: f"{node:.6g}"}
    if isinstance(node, (int, str, bool)):
        return {prefix: node}
    return {}
