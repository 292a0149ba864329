"""`dvc repro` in a temporary copy of the repository: runs, caches, and re-runs only what changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from realsr_r1.data.shards import read_samples
from tests.conftest import REPO, SKIMAGE_DATA

pytestmark = pytest.mark.slow


def copy_repo(dest: Path) -> Path:
    """Tracked files plus untracked-but-not-ignored ones (a working tree as a fresh clone sees it)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith("dvc.lock") and not name.startswith("metrics/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-qm", "copy"], cwd=dest, check=True, env=env)
    return dest


def dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def set_params(repo: Path, **sections: dict) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_repro_caches_and_reruns_only_what_changed(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(SKIMAGE_DATA / name, photos / name)
    set_params(repo, data={"source": str(photos)}, prepare={"crops_per_image": 1}, synthesize={"per_image": 1})

    first = dvc(repo, "repro", "synthesize")
    assert "Running stage 'prepare'" in first and "Running stage 'synthesize'" in first
    assert len(list((repo / "data/shards/train").glob("*.tar"))) + len(list((repo / "data/shards/val").glob("*.tar"))) >= 1

    # `ingest` always runs (it re-scans the source); unchanged photos leave everything below cached
    lock = (repo / "dvc.lock").read_bytes()
    second = dvc(repo, "repro", "synthesize")
    assert "Running stage 'ingest'" in second
    assert "Running stage 'prepare'" not in second and "Running stage 'synthesize'" not in second
    assert (repo / "dvc.lock").read_bytes() == lock

    # a new photo is picked up by a plain `dvc repro`: its crops are in the shards
    shutil.copy(SKIMAGE_DATA / "chelsea.png", photos / "chelsea.png")
    third = dvc(repo, "repro", "synthesize")
    assert "Running stage 'prepare'" in third and "Running stage 'synthesize'" in third
    assert (repo / "data/raw/chelsea.png").exists()
    sources = {s.meta["source"] for split in ("train", "val") for s in read_samples(repo / "data/shards" / split)}
    assert sources == {"astronaut.png", "coffee.png", "chelsea.png"}

    # a synthesize-only param re-runs synthesize alone
    set_params(repo, synthesize={"per_image": 2})
    fourth = dvc(repo, "repro", "synthesize")
    assert "Running stage 'synthesize'" in fourth and "Running stage 'prepare'" not in fourth


def test_bad_params_stop_dvc_with_the_key(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, prepare={"gt_size": 60})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "prepare"], cwd=repo, capture_output=True, text=True, env=env)
    assert run.returncode != 0
    assert "prepare.gt_size" in run.stdout + run.stderr
