"""CI's reproduction check: `make pipeline` on this machine must reproduce the committed state.

- Data stages (ingest ... init_policy): byte for byte. Their dvc.lock entries (deps, params and
  outs hashes) and metrics files equal the committed ones, on any machine and thread count.
- Training and evaluation stages (sft, grpo, evaluate, publish): float training differs with the
  CPU and the thread count, so their dvc.lock deps and params must be equal (bar the hashes of
  the other trained outputs they read), and their headline figures must lie within the tolerances
  of .ci/tolerances.yaml, measured from the spread over training seeds and thread counts
  (`python bench/learning.py --tolerances .ci/tolerances.yaml`).

Prints the table (metric, committed, reproduced, tolerance, verdict), restores the committed
dvc.lock, metrics/ and plots/, and exits 1 when anything is off.

    python .ci/reproduce.py [--threads N] [--no-run]

`--threads N` runs every stage with `threads: N` (params.yaml is restored after); `--no-run`
only compares what the checkout holds now.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from realsr_r1.release import lookup  # `file.a.b` of a metrics dict, None when absent

ROOT = Path(__file__).resolve().parent.parent
TOLERANCES = ROOT / ".ci/tolerances.yaml"
DATA_STAGES = ("ingest", "prepare", "synthesize", "annotate", "tokenizer", "init_policy")
TRAINED_STAGES = ("sft", "grpo", "evaluate", "publish")
RESTORED = ("dvc.lock", "metrics", "plots")


def committed(path: str) -> str:
    """The file as HEAD has it."""
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def lock_problems(before: dict, after: dict, edited: frozenset[str] = frozenset()) -> list[str]:
    """What differs in dvc.lock beyond what float training may change (one line each); `edited`:
    file deps this run changed on purpose (params.yaml under --threads, which publish bundles)."""
    problems = []
    stages_before, stages_after = before.get("stages", {}), after.get("stages", {})
    for stage in DATA_STAGES:
        if stages_before.get(stage) != stages_after.get(stage):
            problems.append(f"dvc.lock: data stage {stage} differs (it must reproduce byte for byte)")
    trained_outs = {o["path"] for s in TRAINED_STAGES for o in stages_after.get(s, {}).get("outs", [])}
    trained_outs |= {p for s in TRAINED_STAGES for p in _metrics_and_plots(s)}
    for stage in TRAINED_STAGES:
        a, b = stages_before.get(stage, {}), stages_after.get(stage, {})
        if a.get("cmd") != b.get("cmd") or a.get("params") != b.get("params"):
            problems.append(f"dvc.lock: {stage}'s command or params differ")
        deps_a = {d["path"]: d for d in a.get("deps", [])}
        deps_b = {d["path"]: d for d in b.get("deps", [])}
        if set(deps_a) != set(deps_b):
            problems.append(f"dvc.lock: {stage}'s deps differ: {sorted(set(deps_a) ^ set(deps_b))}")
        for path in sorted(set(deps_a) & set(deps_b) - trained_outs - edited):
            if deps_a[path] != deps_b[path]:
                problems.append(f"dvc.lock: {stage}'s dep {path} differs")
    return problems


def _metrics_and_plots(stage: str) -> list[str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].get(stage, {})
    return [next(iter(e)) if isinstance(e, dict) else e for e in (*spec.get("metrics", []), *spec.get("plots", []))]


def figure_rows(tolerances: dict, before: dict[str, dict], after: dict[str, dict]) -> list[tuple[str, float | None, float | None, float, bool]]:
    """(metric, committed, reproduced, tolerance, within) per headline figure `file:dotted.key`."""
    rows = []
    for name, spec in tolerances.items():
        file, _, key = name.partition(":")
        a, b = lookup(before.get(file, {}), key), lookup(after.get(file, {}), key)
        ok = a is not None and b is not None and abs(a - b) <= spec["tolerance"]
        rows.append((name, a, b, spec["tolerance"], ok))
    return rows


def check(tolerances: dict, edited: frozenset[str] = frozenset()) -> bool:
    """Compare the checkout with HEAD; print the table and every problem; True when all is within."""
    problems = lock_problems(yaml.safe_load(committed("dvc.lock")), yaml.safe_load((ROOT / "dvc.lock").read_text()), edited)
    for stage in DATA_STAGES:
        for path in _metrics_and_plots(stage):
            if committed(path) != (ROOT / path).read_text():
                problems.append(f"{path}: data stage {stage}'s metrics differ (they must reproduce byte for byte)")
    files = {name.partition(":")[0] for name in tolerances}
    before = {f: json.loads(committed(f"metrics/{f}.json")) for f in files}
    after = {f: json.loads((ROOT / f"metrics/{f}.json").read_text()) for f in files}
    rows = figure_rows(tolerances, before, after)
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'committed':>10}  {'reproduced':>10}  {'tolerance':>9}  verdict")
    show = lambda v: "missing" if v is None else f"{v:.4f}"
    for name, a, b, tol, ok in rows:
        print(f"{name:<{width}}  {show(a):>10}  {show(b):>10}  {tol:>9.4g}  {'ok' if ok else 'OUTSIDE'}")
    problems += [f"{name}: {show(a)} committed, {show(b)} reproduced, tolerance {tol:g}" for name, a, b, tol, ok in rows if not ok]
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return not problems


def with_threads(params: str, count: int) -> str:
    """params.yaml's text with its top-level `threads:` set to `count` (comments kept)."""
    text, n = re.subn(r"(?m)^threads: *\d+", f"threads: {count}", params)
    if n != 1:
        raise SystemExit("params.yaml: no top-level `threads:` line to set")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="run every stage with this many threads")
    ap.add_argument("--no-run", action="store_true", help="compare the checkout as it is")
    args = ap.parse_args()
    tolerances = yaml.safe_load(TOLERANCES.read_text())
    if not args.no_run:
        params = (ROOT / "params.yaml").read_text()
        try:
            if args.threads:
                (ROOT / "params.yaml").write_text(with_threads(params, args.threads))
            subprocess.run(["make", "pipeline"], cwd=ROOT, check=True)
        finally:
            (ROOT / "params.yaml").write_text(params)
    ok = check(tolerances, frozenset({"params.yaml"}) if args.threads else frozenset())
    subprocess.run(["git", "checkout", "HEAD", "--", *RESTORED], cwd=ROOT, check=True)  # HEAD: DVC autostages dvc.lock
    print("reproduced within tolerances" if ok else "error: the pipeline did not reproduce the committed state", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
