"""The DAG as dvc.yaml defines it: stage names, their order, and the paths each one touches.

The flow reads dvc.yaml and never repeats it: a stage added there is run by the flow with no
code change. Order is a topological sort by path (a dep inside or above another stage's
output) with ties kept in dvc.yaml order, the order `dvc dag` agrees with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml


class DagError(ValueError):
    """A dvc.yaml the flow cannot run: the message names the file and the stage."""


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots files: everything the stage writes
    metrics: tuple[str, ...]
    plots: tuple[str, ...]


def _paths(entries: list[Any] | None) -> tuple[str, ...]:
    """dvc.yaml lists entries as `path` or `{path: {options}}`; keep the paths."""
    out: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            out.extend(str(k) for k in entry)
    return tuple(str(PurePosixPath(p)) for p in out)


def _overlaps(a: str, b: str) -> bool:
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa)


def read_stages(dvc_yaml: Path) -> list[Stage]:
    """Stages of `dvc_yaml` in an order where each stage follows everything it depends on."""
    try:
        raw = yaml.safe_load(dvc_yaml.read_text()) or {}
    except FileNotFoundError:
        raise DagError(f"{dvc_yaml}: not found; the flow runs the stages that dvc.yaml defines") from None
    except yaml.YAMLError:
        raise DagError(f"{dvc_yaml}: not valid YAML") from None
    stages: list[Stage] = []
    for name, spec in (raw.get("stages") or {}).items():
        if not isinstance(spec, dict) or "cmd" not in spec:
            raise DagError(f"{dvc_yaml}: stage '{name}' has no cmd")
        if "foreach" in spec or "matrix" in spec:
            raise DagError(f"{dvc_yaml}: stage '{name}' uses foreach/matrix; give each variant a stage")
        metrics, plots = _paths(spec.get("metrics")), _paths(spec.get("plots"))
        stages.append(
            Stage(name, _paths(spec.get("deps")), _paths(spec.get("outs")) + metrics + plots, metrics, plots)
        )
    return _toposort(stages, dvc_yaml)


def upstream(stages: list[Stage]) -> dict[str, set[str]]:
    """Direct upstream stages of each stage (a dep overlapping another stage's output)."""
    return {
        s.name: {
            o.name
            for o in stages
            if o.name != s.name and any(_overlaps(d, p) for d in s.deps for p in o.outs)
        }
        for s in stages
    }


def _toposort(stages: list[Stage], source: Path) -> list[Stage]:
    ups = upstream(stages)
    done: list[Stage] = []
    left = list(stages)
    while left:
        ready = [s for s in left if ups[s.name] <= {d.name for d in done}]
        if not ready:
            raise DagError(f"{source}: cycle among stages {', '.join(s.name for s in left)}")
        done.append(ready[0])
        left.remove(ready[0])
    return done


def select(stages: list[Stage], wanted: list[str] | None, skip: set[str]) -> list[Stage]:
    """The stages to run, in DAG order; unknown names are an error that lists the known ones."""
    names = [s.name for s in stages]
    unknown = [w for w in wanted or [] if w not in names]
    if unknown:
        raise DagError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has {', '.join(names)}")
    chosen = set(wanted) if wanted else set(names)
    return [s for s in stages if s.name in chosen and s.name not in skip]
