"""The committed metrics agree with each other: every stage scores the same val set with the one
PSNR/SSIM-Y path, so bicubic's figures (and the tokenizer's ceiling) on val are one number, whichever
file a reader opens."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import REPO

METRICS = {name: json.loads((REPO / f"metrics/{name}.json").read_text()) for name in ("tokenizer", "sft", "grpo", "evaluate")}


def val_figures(method: str, metric: str) -> dict[str, float]:
    """`method`'s `metric` on val (psnr | ssim | seams) as each metrics file reports it."""
    sft, grpo, evaluate, tokenizer = (METRICS[n] for n in ("sft", "grpo", "evaluate", "tokenizer"))
    key = {"psnr": "psnr_y", "ssim": "ssim_y", "seams": "seams"}[metric]
    figures = {
        "sft.json final": sft["final"][key][method],
        "sft.json early": sft["early"][key][method],
        "grpo.json sft": grpo["sft"][key][method],
        "grpo.json grpo": grpo["grpo"][key][method],
        "evaluate.json val": evaluate["val"][method][metric],
    }
    if metric != "seams":
        field = "" if method == "tokenizer" else "bicubic_"
        figures["tokenizer.json final"] = tokenizer["image"]["final"][f"{field}{metric}"]
    return figures


@pytest.mark.parametrize("method", ["bicubic", "tokenizer"])
@pytest.mark.parametrize("metric", ["psnr", "ssim", "seams"])
def test_one_figure_per_method_on_val(method: str, metric: str) -> None:
    figures = val_figures(method, metric)
    first = next(iter(figures.values()))
    assert all(v == pytest.approx(first, rel=1e-9, abs=1e-9) for v in figures.values()), figures


def test_every_file_scored_the_val_samples_of_params() -> None:
    count = yaml.safe_load((REPO / "params.yaml").read_text())["val_samples"]
    group = yaml.safe_load((REPO / "params.yaml").read_text())["rollout"]["group_size"]
    assert METRICS["evaluate"]["val"]["images"] == count
    assert METRICS["sft"]["final"]["rows"] == METRICS["grpo"]["grpo"]["rows"] == count * group
