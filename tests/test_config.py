"""The params schema: defaults match params.yaml, bad files stop with one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from realsr_r1.config import Params, ParamsError, load_params
from tests.helpers import REPO


def test_params_yaml_is_the_default() -> None:
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"prepare": {"gt_sise": 64}}, "unknown key 'prepare.gt_sise'"),
        ({"prepare": {"gt_size": "big"}}, "key 'prepare.gt_size'"),
        ({"prepare": {"val_fraction": 1.5}}, "key 'prepare.val_fraction'"),
        ({"synthesize": {"degradation": {"stage1": {"noise": {"gray_prob": -0.1}}}}}, "synthesize.degradation.stage1.noise.gray_prob"),
        ({"synthesize": {"degradation": {"stage1": {"blur": {"kernel_probs": {"iso": 0.5}}}}}}, "sum to 1"),
        ({"synthesize": {"degradation": {"stage2": {"jpeg": {"quality": [90, 30]}}}}}, "lower bound above"),
        ({"synthesize": {"degradation": {"kernel_sizes": [6, 21]}}}, "kernel_sizes must be odd"),
        ({"prepare": {"gt_size": 72}}, "multiple of 4 * synthesize.scale"),
        ({"sft": {"batch_size": 0}}, "key 'sft.batch_size'"),
        ({"sft": {"num_processes": 2}}, "num_processes > 1 needs launcher deepspeed or torchrun"),
        ({"sft": {"deepspeed": "zero4"}}, "key 'sft.deepspeed': expected zero2, zero3 or a path to a .json"),
        ({"rollout": {"max_text_tokens": "longest"}}, "key 'rollout.max_text_tokens': expected an integer >= 1 or 'auto'"),
        ({"rollout": {"max_text_tokens": 0}}, "key 'rollout.max_text_tokens': expected an integer >= 1 or 'auto'"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, override: dict, expected: str) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, value in override.items():
        raw[section] = {**raw[section], **value} if isinstance(value, dict) else value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nprepare: [unclosed\n")
    with pytest.raises(ParamsError, match="line"):
        load_params(path)


@pytest.mark.stage
def test_stage_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nprepare:\n  crops_per_image: 0\n")
    run = subprocess.run(
        [sys.executable, "-m", "stages.prepare"], check=False, cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "REALSR_PARAMS": str(path)},
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "prepare.crops_per_image" in run.stderr
