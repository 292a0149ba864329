"""A stage killed with SIGKILL mid-write leaves temporaries; its next run removes them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from realsr_r1.atomic import stale_temporaries, sweep_stale, write_bytes
from tests.helpers import REPO, SKIMAGE_DATA


def test_sweep_removes_only_temporaries_of_the_named_outputs(tmp_path: Path) -> None:
    out = tmp_path / "data" / "shards"
    out.mkdir(parents=True)
    (out / "shard-000000.tar").write_bytes(b"kept")
    (out / ".shard-000001.tar.tmp-abc").write_bytes(b"half")  # a killed write_bytes inside the output
    (tmp_path / "data" / ".shards.tmp-x1").mkdir()  # a killed atomic_dir
    (tmp_path / "data" / ".shards.old-123").mkdir()  # killed between its two renames
    (tmp_path / "data" / ".prepared.tmp-y").mkdir()  # another stage's: not ours to remove
    write_bytes(tmp_path / "data" / "shards.txt", b"a neighbour named alike")
    removed = sweep_stale([out])
    assert sorted(p.name for p in removed) == [".shard-000001.tar.tmp-abc", ".shards.old-123", ".shards.tmp-x1"]
    assert (out / "shard-000000.tar").read_bytes() == b"kept"
    assert (tmp_path / "data" / ".prepared.tmp-y").exists() and (tmp_path / "data" / "shards.txt").exists()
    assert stale_temporaries(out) == []


@pytest.mark.stage
def test_a_stage_killed_mid_write_is_cleaned_up_by_its_next_run(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "data" / "raw").mkdir(parents=True)
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        shutil.copy(SKIMAGE_DATA / name, work / "data" / "raw" / name)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["crops_per_image"] = 1000  # seconds of writing: a window to kill it in
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "stages.prepare"]

    proc = subprocess.Popen(cmd, cwd=work, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            tmp = list((work / "data").glob(".prepared.tmp-*"))
            if tmp and len(list(tmp[0].rglob("*.png"))) >= 20:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9: the stage and any worker it started
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
    left = list((work / "data").glob(".prepared.tmp-*"))
    assert left and not (work / "data" / "prepared").exists()

    params["prepare"]["crops_per_image"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    rerun = subprocess.run(cmd, check=False, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {left[0].relative_to(work)}" in rerun.stderr
    assert list((work / "data").glob(".prepared*")) == [] and (work / "data" / "prepared" / "crops.jsonl").exists()
