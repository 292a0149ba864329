"""Synthesis end to end: determinism across worker counts, the shard contract, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import Result
from skimage import data
from typer.testing import CliRunner

from realsr_r1.cli import app
from realsr_r1.config import DegradationParams
from realsr_r1.data.shards import read_samples
from realsr_r1.data.synthesis import degrade_sample, synthesize_split
from realsr_r1.degrade import from_text, to_text
from tests.helpers import tar_bytes


def test_same_bytes_for_any_worker_count(crops: list, tmp_path: Path) -> None:
    p = DegradationParams()
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        stats = synthesize_split(crops, len(crops), out, 3, p, 4, 0, workers, shard_size=10)
        assert stats["samples"] == 3 * len(crops)
    one, two = tar_bytes(tmp_path / "w1"), tar_bytes(tmp_path / "w2")
    assert len(one) == 4  # 36 samples in shards of 10
    assert one == two


def test_shards_hold_the_contract(crops: list, tmp_path: Path) -> None:
    synthesize_split(crops[:2], 2, tmp_path, 2, DegradationParams(), 4, 0, 1, shard_size=100)
    samples = list(read_samples(tmp_path))
    assert len(samples) == 4
    for s in samples:
        assert s.lr.shape == (16, 16, 3) and s.hr.shape == (64, 64, 3)
        assert s.hr_2.shape == (32, 32, 3) and s.hr_4.shape == (16, 16, 3)
        assert from_text(s.degradation["text"]) == [tuple(i) for i in s.degradation["operations"]]
        assert s.degradation["stage1"]["jpeg"]["quality"] in range(30, 96)
        assert s.meta["gt_key"] + f"_k{s.meta['degradation_index']:02d}" == s.key
    # plain webdataset reads every field too
    fields = next(iter(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False)))
    assert {"lr.png", "hr.png", "hr_2.png", "hr_4.png", "degradation.json", "meta.json"} <= set(fields)


def test_lr_is_degraded_but_close_to_the_gt() -> None:
    gt = data.astronaut()[128:384, 128:384].copy()
    lr, record = degrade_sample(gt, DegradationParams(), 4, np.random.default_rng(1))
    assert lr.shape == (64, 64, 3) and lr.dtype == np.uint8
    small = gt.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert 1.0 < np.abs(lr - small).mean() < 60.0
    assert record["text"] == to_text([tuple(i) for i in record["operations"]])


def test_description_text_round_trip() -> None:
    items = [("blur", "medium"), ("downsample", None), ("noise", "heavy"), ("compression", "light"), ("upsample", None)]
    text = to_text(items)
    assert text == "medium blur, downsample, heavy noise, light compression, upsample"
    assert from_text(text) == items
    with pytest.raises(ValueError, match="strong blur"):
        from_text("strong blur, downsample")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`realsr ARGS` as its own process: for what only a real process shows (stderr, exit code)."""
    return subprocess.run([sys.executable, "-m", "realsr_r1.cli", *args], capture_output=True, text=True, check=False)


def invoke(*args: str) -> Result:
    """`realsr ARGS` in this process (no interpreter and torch start-up per call)."""
    return CliRunner().invoke(app, list(args))


def test_cli_synthesize_is_reproducible(photo_dir: Path, tmp_path: Path) -> None:
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        run = invoke("synthesize", "--input", str(photo_dir), "--out", str(out), "--gt-size", "128",
                     "--per-image", "2", "--seed", "3", "--workers", "2")
        assert run.exit_code == 0, run.output
        assert "broken.jpg" in run.stderr
    assert tar_bytes(outs[0]) == tar_bytes(outs[1]) and tar_bytes(outs[0])
    report = json.loads((outs[0] / "report.json").read_text())
    assert len(report["accepted"]) == 4 and report["samples"]["train"] == 8
    assert all(s.hr.shape == (128, 128, 3) for s in read_samples(outs[0] / "train"))


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    # a real process: nothing but the one line reaches its stderr (no warning, log or traceback)
    run = run_cli("synthesize", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "missing" in run.stderr
    (tmp_path / "fake.png").write_text("not an image")
    bad = invoke("degrade", str(tmp_path / "fake.png"), "-o", str(tmp_path / "lr.png"))
    assert bad.exit_code == 2 and "fake.png" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "lr.png").exists()


def test_cli_degrade(photo_dir: Path, tmp_path: Path) -> None:
    run = invoke("degrade", str(photo_dir / "chelsea.png"), "-o", str(tmp_path / "lr.png"), "--seed", "5")
    assert run.exit_code == 0, run.output
    from_text(run.stdout.strip())  # prints a parseable description
    from PIL import Image

    assert Image.open(tmp_path / "lr.png").size == (451 // 4, 300 // 4)
    run = invoke("degrade", "--count", "50", "--seed", "1", "--jsonl", str(tmp_path / "d.jsonl"))
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert run.exit_code == 0 and len(lines) == 50
    assert len({json.loads(line)["noise_seed"] for line in lines}) == 50
