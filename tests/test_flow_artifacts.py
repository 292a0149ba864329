"""What the flow attaches to a stage's task: a metrics table and inlined image plots."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from PIL import Image

from flows.dag import Stage
from flows.grpo import MAX_INLINE_IMAGE, image_markdown, metrics_markdown


def _stage(metrics: tuple[str, ...] = (), plots: tuple[str, ...] = ()) -> Stage:
    return Stage("evaluate", (), metrics + plots, metrics, plots)


def test_metrics_table_flattens_nested_metrics(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps({"grpo": {"psnr_y": 21.123456789, "n": 8}}))
    md = metrics_markdown(tmp_path, _stage(metrics=("metrics/evaluate.json", "metrics/absent.json")))
    assert md is not None
    assert "| metrics/evaluate.json | grpo.psnr_y | 21.1235 |" in md
    assert "| metrics/evaluate.json | grpo.n | 8 |" in md
    assert metrics_markdown(tmp_path, _stage(metrics=("metrics/absent.json",))) is None


def test_comparison_sheet_is_inlined_and_big_images_are_referenced(tmp_path: Path) -> None:
    (tmp_path / "plots/evaluate").mkdir(parents=True)
    sheet = tmp_path / "plots/evaluate/comparison_sheet.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(sheet)
    big = tmp_path / "plots/evaluate/huge.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (MAX_INLINE_IMAGE + 1))
    (tmp_path / "plots/evaluate/curve.csv").write_text("step,loss\n0,1\n")
    out = dict(image_markdown(tmp_path, _stage(plots=("plots/evaluate",))))
    assert set(out) == {"plots/evaluate/comparison_sheet.png", "plots/evaluate/huge.png"}
    inline = out["plots/evaluate/comparison_sheet.png"]
    assert base64.b64encode(sheet.read_bytes()).decode() in inline and "data:image/png;base64," in inline
    assert "too large to inline" in out["plots/evaluate/huge.png"]
