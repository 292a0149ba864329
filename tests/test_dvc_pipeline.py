"""`dvc repro` in a temporary copy of the repository: runs, caches, and re-runs only what changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realsr_r1.data.shards import read_samples
from tests.helpers import REPO, SKIMAGE_DATA, copy_repo, set_params

pytestmark = pytest.mark.stage


def fresh_copy(dest: Path) -> Path:
    """The working tree as a fresh clone sees it, without the committed lock and metrics."""
    copy_repo(REPO, dest, exclude=("dvc.lock", "metrics/"))
    return dest


def dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_repro_caches_and_reruns_only_what_changed(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "repo")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(SKIMAGE_DATA / name, photos / name)
    set_params(repo, {"data.source": str(photos), "prepare.crops_per_image": 1, "synthesize.per_image": 1})

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
    set_params(repo, {"synthesize.per_image": 2})
    fourth = dvc(repo, "repro", "synthesize")
    assert "Running stage 'synthesize'" in fourth and "Running stage 'prepare'" not in fourth


def test_bad_params_stop_dvc_with_the_key(tmp_path: Path) -> None:
    repo = fresh_copy(tmp_path / "repo")
    set_params(repo, {"prepare.gt_size": 60})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "prepare"], cwd=repo, capture_output=True, text=True, env=env, check=False)
    assert run.returncode != 0
    assert "prepare.gt_size" in run.stdout + run.stderr


def test_janus_backbone_runs_the_whole_pipeline(tmp_path: Path) -> None:
    """`dvc exp run -S policy.backbone=janus -S policy.path=...` on a tiny saved Janus (small data
    budget): every stage runs, SFT and GRPO train Janus itself, evaluate and publish read it."""
    import json

    import torch

    from realsr_r1.policy.janus_tiny import build_tiny_janus, bundled_texts
    from realsr_r1.policy.loading import load_policy
    from tests.helpers import TINY_PIPELINE

    repo = tmp_path / "repo"
    copy_repo(REPO, repo, params=TINY_PIPELINE, exclude=("dvc.lock", "metrics/"))
    janus = build_tiny_janus(tmp_path / "Janus-Pro-tiny", bundled_texts())
    out = dvc(repo, "exp", "run", "-S", "policy.backbone=janus", "-S", f"policy.path={janus}")
    for stage in ("init_policy", "sft", "grpo", "evaluate", "publish"):
        assert f"Running stage '{stage}'" in out
    assert json.loads((repo / "models/grpo/policy.json").read_text())["backbone"] == "janus"
    init, sft, grpo = (load_policy(repo / "models" / name) for name in ("policy_init", "sft", "grpo"))
    head = lambda p: p.model.model.generation_head.vision_head.weight
    assert not torch.equal(head(init), head(sft)) and not torch.equal(head(sft), head(grpo))
    assert [r["stage"] for r in grpo.record.runs] == ["sft", "grpo"]
    val = json.loads((repo / "metrics/evaluate.json").read_text())["val"]
    assert {"bicubic", "sft", "grpo"} <= set(val) and val["grpo"]["psnr"] > 0
    assert (repo / "models/release/models/grpo/janus/config.json").is_file()
