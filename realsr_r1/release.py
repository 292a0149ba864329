"""What goes into a release and whether to publish it: the bundle, its model card, the gate.

The bundle is self-contained (weights, configs, tokenizers, metrics, MODEL_CARD.md) and
depends only on the run's files, not on where it is published; the manifest with a sha256 per
file (and the version) is added by `storage` at upload. The gate compares one metric
of the candidate with the latest release so a nightly retrain publishes only improvements.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
    """`evaluate.val.grpo.psnr` -> metrics["evaluate"]["val"]["grpo"]["psnr"] as a float, or None."""
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


WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}
NO_POLICY = "none (this bundle holds no trained policy; it is not a usable super-resolution model)"


POLICY_CONFIG = "policy.json"  # a realsr policy folder's config (realsr_r1.policy.loading.CONFIG_FILE)


def checkpoints(files: list[str]) -> list[str]:
    """Folders holding a checkpoint to run: a policy (`policy.json`, what `load_policy` reads) or
    another from_pretrained model (config.json beside weights) outside any policy folder. A
    tokenizer's codebook tensors are weights too, but no model to run."""
    paths = [PurePosixPath(rel) for rel in files]
    names = {p.as_posix() for p in paths}
    policies = {p.parent for p in paths if p.name == POLICY_CONFIG}
    models = {
        p.parent for p in paths
        if p.suffix in WEIGHT_SUFFIXES and (p.parent / "config.json").as_posix() in names
        and not any(parent in policies for parent in p.parents)
    }
    return sorted(folder.as_posix() for folder in policies | models)


def model_card(
    name: str, included: list[str], metrics: dict[str, Any], bundle: Path, producers: dict[str, str]
) -> str:
    """A Markdown card that states only what the bundle holds and what made it.

    `producers` maps a bundled path to the pipeline step that wrote it (from the run's records);
    the card claims no training that the bundle does not show. It holds no date and no version,
    so the same inputs give the same bundle byte for byte, wherever it is published.
    """
    manifest = build_manifest(bundle, name, "-")
    policies = checkpoints(list(manifest["files"]))
    made_by = lambda rel: producers.get(rel, "not recorded by the pipeline")
    lines = [
        f"# {name}",
        "",
        "A RealSR-R1 release bundle: the files below, exactly as the pipeline run wrote them.",
        "",
        "- Policy checkpoint: " + (", ".join(f"`{c}`" for c in policies) if policies else NO_POLICY),
        f"- Get it: `realsr releases {name}` lists the versions; `realsr pull {name}@VERSION -o DIR`",
        "  verifies every sha256",
        "- Licence notes: evaluation metrics come from pyiqa (non-commercial licence); training",
        "  photos are those of the params' `data.source`.",
        "",
        "## Contents and the steps that produced them",
        "",
        "| path | produced by |",
        "|---|---|",
    ]
    metric_files = sorted({rel for rel in manifest["files"] if rel.startswith("metrics/")})
    lines += [f"| {rel} | {made_by(rel)} |" for rel in [*included, *metric_files]]
    lines += ["", "## Metrics", ""]
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
