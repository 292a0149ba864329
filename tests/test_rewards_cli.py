"""`realsr reward COMPLETION.json` on real case files, and the case file's errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from realsr_r1.cli import app
from realsr_r1.rewards.case import CaseError, read_case, write_case
from realsr_r1.vlcot import VLCoT, render

GT_TEXT = "medium blur, downsample, medium noise, light compression, upsample"
PRED_TEXT = "light blur, downsample, heavy noise, light compression, upsample"


def _case(tmp_path: Path, final_size: int = 64) -> Path:
    gt = cv2.resize(data.chelsea()[0:300, 60:360], (64, 64), interpolation=cv2.INTER_AREA)
    chain = VLCoT(
        degradation=PRED_TEXT,
        rough_understand="Two lions lying on a rock under a blue sky",
        middle_understand="lions on a rock",
        final_understand="two lions on a grey rock, blue sky",
        rough_image=cv2.resize(gt, (16, 16), interpolation=cv2.INTER_AREA),
        middle_image=cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA),
        final_image=cv2.resize(gt, (final_size, final_size), interpolation=cv2.INTER_AREA),
    )
    path = tmp_path / "case.json"
    write_case(path, render(chain), GT_TEXT, ["lions", "rock", "sky", "clouds"], gt)
    return path


def test_reward_command_prints_each_reward_with_the_paper_values(tmp_path: Path) -> None:
    path = _case(tmp_path)
    paper = tmp_path / "paper.yaml"
    paper.write_text("rewards:\n  understanding: {mode: paper}\n")
    result = CliRunner().invoke(app, ["reward", str(path), "--params", str(paper), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["format"] == 1.0 and out["degradation"] == 0.6 and out["understanding"] == 0.75
    assert 0.0 < out["generation"] <= 1.0 and out["format_error"] is None
    assert out["total"] == pytest.approx(1.0 + 0.6 + 0.75 + out["generation"])
    table = CliRunner().invoke(app, ["reward", str(path), "--params", str(tmp_path / "none.yaml")])
    assert "degradation    0.6000" in table.output and "total" in table.output
    # the default (words) mode: 3 of the 4 tags and nothing else mentioned, F1 = 6/7
    assert f"understanding  {6 / 7:.4f}" in table.output


def test_case_vocabulary_counts_mentions_outside_the_gt(tmp_path: Path) -> None:
    path = _case(tmp_path)
    raw = json.loads(path.read_text())
    raw["truth"]["vocabulary"] = ["lions", "rock", "sky", "clouds", "tree", "blue sky"]
    path.write_text(json.dumps(raw))
    assert read_case(path)[1].vocabulary == frozenset(raw["truth"]["vocabulary"])
    result = CliRunner().invoke(app, ["reward", str(path), "--params", str(tmp_path / "none.yaml"), "--json"])
    # "blue sky" is a tag of the dataset but not of this photo: 3 of 4 mentions are right, F1 = 6/8
    assert json.loads(result.output)["understanding"] == pytest.approx(0.75)


def test_reward_command_reads_weights_from_params_and_reports_format_errors(tmp_path: Path) -> None:
    path = _case(tmp_path, final_size=48)  # wrong final size: format 0, and the error is shown
    params = tmp_path / "params.yaml"
    params.write_text("rewards:\n  weights: {format: 1, degradation: 0, understanding: 0, generation: 0}\n")
    result = CliRunner().invoke(app, ["reward", str(path), "--params", str(params), "--json"])
    out = json.loads(result.output)
    assert out["format"] == 0.0 and out["total"] == 0.0 and out["weights"]["degradation"] == 0.0
    raw = json.loads(path.read_text())
    raw["completion"]["text"] = raw["completion"]["text"].replace("</degradation>", "")
    path.write_text(json.dumps(raw))
    broken = CliRunner().invoke(app, ["reward", str(path), "--params", str(params)])
    assert "format error: degradation: <degradation> is never closed" in broken.output


def test_reward_command_errors_are_one_line(tmp_path: Path) -> None:
    path = _case(tmp_path)
    raw = json.loads(path.read_text())
    raw["truth"]["gt"] = "missing.png"
    path.write_text(json.dumps(raw))
    result = CliRunner().invoke(app, ["reward", str(path), "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "key 'truth.gt'" in result.output and "missing.png" in result.output


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("truth"), "missing key 'truth'"),
        (
            lambda r: r["truth"].update(degradation="a bit blurry"),
            "key 'truth.degradation': not a degradation item",
        ),
        (lambda r: r["completion"].update(images=[3]), r"key 'completion.images\[0\]' must be an image path"),
        (lambda r: r["completion"].update(images="x.png"), "must be a string"),
        (lambda r: r["truth"].update(vocabulary="lions, rock"), "truth.vocabulary lists"),
    ],
    ids=["no-truth", "bad-degradation", "image-not-path", "images-not-list", "vocabulary-not-list"],
)
def test_case_errors_name_the_key(tmp_path: Path, mutate, message: str) -> None:
    path = _case(tmp_path)
    raw = json.loads(path.read_text())
    mutate(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(CaseError, match=message):
        read_case(path)


def test_case_round_trip(tmp_path: Path) -> None:
    completion, truth = read_case(_case(tmp_path))
    assert len(completion.images) == 3 and completion.images[2].shape == (64, 64, 3)
    assert truth.tags == ("lions", "rock", "sky", "clouds") and truth.degradation[0] == ("blur", "medium")
    assert np.array_equal(truth.gt, read_case(_case(tmp_path))[1].gt)
