"""CI's reproduction check (.ci/reproduce.py) on the committed files: a figure moved past its
tolerance fails it, float noise within it passes, and dvc.lock may differ only where float
training may (the hashes of trained outputs), never in a data stage or in deps and params."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.learning import HEADLINE
from tests.helpers import GIT_ID, REPO

spec = importlib.util.spec_from_file_location("reproduce", REPO / ".ci/reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)
TOLERANCES = yaml.safe_load((REPO / ".ci/tolerances.yaml").read_text())
LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())


def test_every_headline_figure_has_a_tolerance_with_its_reason() -> None:
    assert set(TOLERANCES) == {f"{file}:{key}" for file, key in HEADLINE}
    for name, spec_ in TOLERANCES.items():
        assert spec_["tolerance"] > 0 and "gap between" in spec_["why"], name
        file, _, key = name.partition(":")
        assert reproduce.lookup(json.loads((REPO / f"metrics/{file}.json").read_text()), key) is not None, name


def test_a_figure_outside_its_tolerance_fails_and_float_noise_passes() -> None:
    files = {f: json.loads((REPO / f"metrics/{f}.json").read_text()) for f in {n.partition(":")[0] for n in TOLERANCES}}
    name = "evaluate:val.grpo.psnr"
    tol = TOLERANCES[name]["tolerance"]
    for shift, within in ((0.5 * tol, True), (-0.9 * tol, True), (1.5 * tol, False), (-3 * tol, False)):
        moved = copy.deepcopy(files)
        moved["evaluate"]["val"]["grpo"]["psnr"] += shift
        rows = {row[0]: row for row in reproduce.figure_rows(TOLERANCES, files, moved)}
        assert rows[name][4] is within, shift
        assert all(row[4] for n, row in rows.items() if n != name)
    del files["evaluate"]["val"]["grpo"]
    assert not {row[0]: row for row in reproduce.figure_rows(TOLERANCES, files, files)}[name][4]  # missing: fails


def test_dvc_lock_may_differ_only_in_trained_outputs() -> None:
    assert reproduce.lock_problems(LOCK, LOCK) == []
    trained = copy.deepcopy(LOCK)
    for stage in reproduce.TRAINED_STAGES:
        for out in trained["stages"][stage]["outs"]:
            out["md5"] = "0" * 32
    for dep in trained["stages"]["grpo"]["deps"]:
        if dep["path"] in ("models/sft", "metrics/sft.json"):
            dep["md5"] = "1" * 32
    assert reproduce.lock_problems(LOCK, trained) == []

    data = copy.deepcopy(LOCK)
    data["stages"]["synthesize"]["outs"][0]["md5"] = "0" * 32
    assert reproduce.lock_problems(LOCK, data) == ["dvc.lock: data stage synthesize differs (it must reproduce byte for byte)"]
    params = copy.deepcopy(LOCK)
    params["stages"]["sft"]["params"]["params.yaml"]["sft"]["lr"] = 1.0
    assert reproduce.lock_problems(LOCK, params) == ["dvc.lock: sft's command or params differ"]
    code = copy.deepcopy(LOCK)
    dep = next(d for d in code["stages"]["grpo"]["deps"] if d["path"] == "stages/grpo.py")
    dep["md5"] = "2" * 32
    assert reproduce.lock_problems(LOCK, code) == ["dvc.lock: grpo's dep stages/grpo.py differs"]
    bundled = copy.deepcopy(LOCK)  # --threads edits params.yaml, which publish bundles as a file
    next(d for d in bundled["stages"]["publish"]["deps"] if d["path"] == "params.yaml")["md5"] = "3" * 32
    assert reproduce.lock_problems(LOCK, bundled) == ["dvc.lock: publish's dep params.yaml differs"]
    assert reproduce.lock_problems(LOCK, bundled, frozenset({"params.yaml"})) == []


def test_threads_is_set_with_the_comments_kept() -> None:
    text = (REPO / "params.yaml").read_text()
    changed = reproduce.with_threads(text, 1)
    assert yaml.safe_load(changed)["threads"] == 1 and changed.count("\n") == text.count("\n")
    assert {k: v for k, v in yaml.safe_load(changed).items() if k != "threads"} == {
        k: v for k, v in yaml.safe_load(text).items() if k != "threads"
    }


def test_the_check_fails_ci_on_a_moved_figure_and_restores_the_checkout(tmp_path: Path) -> None:
    """The script itself, in a git repo holding the committed files: exit 0 on the committed state,
    exit 1 with the figure marked OUTSIDE once one moved, and the checkout restored either way."""
    repo = tmp_path / "repo"
    for rel in (".ci/reproduce.py", ".ci/tolerances.yaml", "dvc.yaml", "dvc.lock", "metrics", "plots"):
        src, dst = REPO / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ID})
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "committed state")
    run = lambda: subprocess.run([sys.executable, ".ci/reproduce.py", "--no-run"], check=False, cwd=repo, capture_output=True, text=True)
    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert "evaluate:val.grpo.psnr" in ok.stdout and "OUTSIDE" not in ok.stdout

    metrics = repo / "metrics/evaluate.json"
    moved = json.loads(metrics.read_text())
    moved["val"]["grpo"]["psnr"] += 2 * TOLERANCES["evaluate:val.grpo.psnr"]["tolerance"]
    metrics.write_text(json.dumps(moved))
    failed = run()
    assert failed.returncode == 1
    line = next(row for row in failed.stdout.splitlines() if row.startswith("evaluate:val.grpo.psnr"))
    assert line.endswith("OUTSIDE") and "error: evaluate:val.grpo.psnr" in failed.stderr
    assert git("status", "--porcelain").stdout == b""  # restored
