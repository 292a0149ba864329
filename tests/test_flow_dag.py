"""The flow's view of dvc.yaml (order, selection) and its failure classes, without servers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dag import DagError, read_stages, select, upstream
from flows.dvc import Result, StageError, TransientStageError, check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.stage
def test_order_matches_dvc_dag_of_the_project() -> None:
    stages = read_stages(ROOT / "dvc.yaml")
    dot = subprocess.run(
        [sys.executable, "-m", "dvc", "dag", "--dot"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot)
    position = {s.name: i for i, s in enumerate(stages)}
    assert set(position) == set(re.findall(r'^"([^"]+)";$', dot, re.MULTILINE))
    assert edges and all(position[a] < position[b] for a, b in edges)
    ups = upstream(stages)
    assert all(a in ups[b] for a, b in edges)
    assert stages[-1].name == "publish"


def _write(tmp: Path, text: str) -> Path:
    (tmp / "dvc.yaml").write_text(text)
    return tmp / "dvc.yaml"


def test_order_follows_paths_not_file_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
stages:
  report: {cmd: r, deps: [models/m/weights.bin], metrics: [{metrics/r.json: {cache: false}}]}
  train: {cmd: t, deps: [data/x], outs: [models/m]}
  make: {cmd: m, outs: [data/x]}
  other: {cmd: o}
""",
    )
    stages = read_stages(path)
    assert [s.name for s in stages] == ["make", "train", "report", "other"]
    assert stages[2].metrics == ("metrics/r.json",)
    assert [s.name for s in select(stages, ["report", "make"], set())] == ["make", "report"]
    assert [s.name for s in select(stages, None, {"report"})] == ["make", "train", "other"]
    with pytest.raises(DagError, match="unknown stage.*nope; dvc.yaml has make, train, report, other"):
        select(stages, ["nope"], set())


def test_bad_dvc_yaml_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DagError, match="cycle among stages a, b"):
        read_stages(
            _write(
                tmp_path,
                "stages:\n  a: {cmd: x, deps: [p], outs: [q]}\n  b: {cmd: y, deps: [q], outs: [p]}\n",
            )
        )
    with pytest.raises(DagError, match="stage 'a' has no cmd"):
        read_stages(_write(tmp_path, "stages:\n  a: {deps: [p]}\n"))
    with pytest.raises(DagError, match="not found"):
        read_stages(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    ("output", "default", "kind"),
    [
        ("ERROR: failed to push data to the cloud - 3 files failed to upload", False, TransientStageError),
        (
            'ERROR: unexpected error - Could not connect to the endpoint URL: "http://127.0.0.1:9/b"',
            False,
            TransientStageError,
        ),
        (
            (
                "error: params.yaml: key 'publish.mode': Input should be 'max' or 'min'\n"
                "ERROR: failed to reproduce 'publish': failed to run: python -m stages.publish, exited with 2"
            ),
            False,
            StageError,
        ),
        (
            "500 samples written\nTraceback ...\nValueError: bad shape\nERROR: failed to reproduce 'x'",
            False,
            StageError,
        ),
        ("ERROR: configuration error - config file error: no remote specified", True, StageError),
        ("ERROR: something odd while pushing", True, TransientStageError),
    ],
)
def test_failure_classes(output: str, default: bool, kind: type[StageError]) -> None:
    with pytest.raises(StageError) as info:
        check(Result(["x"], 1, output), "stage x", transient_by_default=default)
    assert type(info.value) is kind
    assert "\n" not in str(info.value) and str(info.value).startswith("stage x failed (dvc exit 1): ")
    assert check(Result(["x"], 0, output), "stage x", default).returncode == 0
