"""The evaluation: PSNR/SSIM-Y with a crop border against NumPy/scikit-image, bad benchmark files as
one line each, skipped metrics never 0, and `realsr evaluate`'s report opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from realsr_r1.cli import app
from realsr_r1.evaluate.benchmark import (
    BenchmarkError,
    bicubic_method,
    evaluate,
    folder_method,
    load_benchmark,
    table_rows,
)
from realsr_r1.evaluate.protocol import METRICS, MetricSet
from tests.helpers import gt_and_lr, tiny_policy_checkpoint

runner = CliRunner()
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = "apt-get install -y chromium"
DEEP = [m.name for m in METRICS if m.weights]


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def test_bad_files_are_one_line_each_and_the_rest_is_scored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bench = tmp_path / "bench"
    gt, lr = gt_and_lr("coffee", (100, 200, 48, 64))
    _save(bench / "LR/good.png", lr)
    _save(bench / "HR/good.png", gt)
    _save(bench / "LR/lonely.png", lr)  # no HR
    _save(bench / "HR/orphan.png", gt)  # no LR
    (bench / "LR/broken.png").write_bytes(b"not a png")
    _save(bench / "HR/broken.png", gt)
    _save(bench / "LR/small.png", lr)
    _save(bench / "HR/small.png", gt[:40, :60])  # HR != 4 x LR
    with caplog.at_level(logging.WARNING, logger="realsr_r1"):
        b = load_benchmark(bench, 4)
    assert [p.name for p in b.pairs] == ["good"] and b.paired
    lines = b.problems
    assert len(lines) == 4 and all("\n" not in line and line.endswith("not scored") for line in lines)
    assert f"{bench / 'HR/orphan.png'}: no LR/orphan.*" in lines[0]
    assert any(line.startswith(f"{bench / 'LR/lonely.png'}: no HR/lonely.*") for line in lines)
    assert any(line.startswith(f"{bench / 'LR/broken.png'}: unreadable") for line in lines)
    assert f"{bench / 'HR/small.png'}: HR 60x40 is not 4 x LR 16x12, not scored" in lines
    assert all(line in caplog.text for line in lines)
    # a method folder lacking an output: one more line, the other methods still scored
    # or holding one of the wrong size
    (tmp_path / "other").mkdir()
    _save(tmp_path / "wrong/good.png", gt[:, :32])
    methods = {
        "bicubic": bicubic_method,
        "other": folder_method(tmp_path / "other", b.problems),
        "wrong": folder_method(tmp_path / "wrong", b.problems),
    }
    result = evaluate(b, methods, 4, MetricSet(None), progress=False)
    assert f"{tmp_path / 'other'}: no output for good, not scored" in result.problems
    assert f"{tmp_path / 'wrong/good.png'}: 32x48, expected 64x48, not scored" in result.problems
    assert [r["method"] for r in result.rows] == ["bicubic"] and result.means["bicubic"]["psnr"] > 20
    assert result.means["other"]["psnr"] is None and result.means["wrong"]["psnr"] is None
    # nothing usable at all: one clear error naming the folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkError, match=r"empty: no photos .*expected LR/ and HR/"):
        load_benchmark(tmp_path / "empty", 4)


def test_skipped_metrics_are_none_and_marked_never_zero(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    from pyiqa.utils import download_util

    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub.get_dir())
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", download_util.DEFAULT_CACHE_DIR)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = tmp_path / "weights"
    musiq = weights / "pyiqa/musiq_koniq_ckpt-e95806b9.pth"
    musiq.parent.mkdir(parents=True)
    musiq.write_bytes(b"not a checkpoint")  # present, but does not load
    with caplog.at_level(logging.WARNING, logger="realsr_r1"):
        metrics = MetricSet(weights)
    assert set(metrics.skipped) == set(DEEP) - {"musiq"}
    assert "lacks pyiqa/LPIPS_v0.1_alex-df73285e.pth, checkpoints/alexnet-owt-7be5be79.pth" in metrics.skipped["lpips"]
    gt, lr = gt_and_lr("astronaut", (0, 100, 192, 256))  # a whole photo: every metric is tried
    _save(tmp_path / "bench/LR/a.png", lr)
    _save(tmp_path / "bench/HR/a.png", gt)
    with caplog.at_level(logging.WARNING, logger="realsr_r1"):
        result = evaluate(load_benchmark(tmp_path / "bench", 4), {"bicubic": bicubic_method}, 4, metrics, progress=False)
    assert set(result.skipped) == set(DEEP)
    assert result.skipped["musiq"].startswith(f"failed to load from {weights}")
    for name in DEEP:  # one warning each, value None (JSON null), "skipped" in the table
        assert caplog.text.count(f"{next(m.label for m in METRICS if m.name == name)} skipped:") == 1
        assert result.means["bicubic"][name] is None and name not in result.rows[0]
    _, row = table_rows(result)
    for name in DEEP:
        assert row[1 + result.metrics.index(name)] == "skipped"
    assert min(result.means["bicubic"][k] for k in ("niqe", "piqe", "ms_ssim")) > 0 and not result.problems
    # a 64 px crop: MS-SSIM, and the no-reference quality metrics (NIQE prefers mosaics on crops), give None and a note, never 0
    gt, lr = gt_and_lr("astronaut", (0, 100, 64, 64))
    _save(tmp_path / "crop/LR/a.png", lr)
    _save(tmp_path / "crop/HR/a.png", gt)
    crop = evaluate(load_benchmark(tmp_path / "crop", 4), {"bicubic": bicubic_method}, 4, MetricSet(None), progress=False)
    assert "MS-SSIM needs both sides >= 161 px: not scored for a" in crop.problems
    assert "no-reference quality metrics need whole photos, both sides >= 192 px: not scored for a" in crop.problems
    _, row = table_rows(crop)
    assert crop.means["bicubic"]["ms_ssim"] is None and crop.means["bicubic"]["niqe"] is None and row[1 + crop.metrics.index("niqe")] == "-"
    # LR only: no full-reference metric at all
    lr_only = evaluate(load_benchmark(tmp_path / "bench/LR", 4), {"bicubic": bicubic_method}, 4, MetricSet(None), progress=False)
    assert not lr_only.paired and lr_only.metrics == ["niqe", "piqe", "seams", "musiq", "maniqa", "clipiqa", "topiq"]


# ----------------------------------------------------------------- the CLI and its report in a browser
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_parts) -> tuple[Path, Path, str]:
    """`realsr evaluate` of a tiny untrained policy, bicubic and a nearest-neighbour folder on two real photos."""
    root = tmp_path_factory.mktemp("evaluate")
    tiny_policy_checkpoint(root, tiny_parts, max_text_tokens=4)
    for name, box in (("astronaut", (0, 120, 192, 256)), ("coffee", (100, 200, 192, 256))):  # whole photos: NIQE is scored
        gt, lr = gt_and_lr(name, box)
        _save(root / f"bench/LR/{name}.png", lr)
        _save(root / f"bench/HR/{name}.png", gt)
        _save(root / f"nearest/{name}.png", cv2.resize(lr, gt.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    res = runner.invoke(
        app,
        ["evaluate", "--benchmark", str(root / "bench"), "--model", str(root / "policy"), "--method", f"nearest={root / 'nearest'}",
         "-o", str(root / "out"), "--params", str(root / "params.yaml"), "--decode", "both", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    return root, root / "out", res.output


METHODS = ("bicubic", "realesrgan", "policy (expected)", "policy (sampled)", "nearest")


def test_evaluate_cli_prints_the_table_and_writes_every_output(evaluated) -> None:
    _, out, output = evaluated
    assert "2 photos, paired; methods: bicubic, realesrgan, policy (expected), policy (sampled), nearest" in output
    assert re.search(r"method\s+PSNR ↑\s+SSIM ↑\s+MS-SSIM ↑\s+GMSD ↓\s+LPIPS ↓", output, re.MULTILINE)
    assert re.search(r"^nearest\s+\d+\.\d\d\s+0\.\d{4}\s+0\.\d{4}\s+0\.\d{4}\s+skipped", output, re.MULTILINE)
    report = json.loads((out / "metrics.json").read_text())
    assert report["methods"] == list(METHODS) and report["images"] == 2 and report["crop_border"] == 4
    assert all(report["means"][m]["lpips"] is None for m in METHODS)
    rows = list(csv.DictReader(io.StringIO((out / "per_image.csv").read_text())))
    assert len(rows) == 2 * len(METHODS) and {r["lpips"] for r in rows} == {"skipped"} and all(float(r["psnr"]) > 5 for r in rows)
    sheet = Image.open(out / "sheets/astronaut.png")
    assert sheet.size == (7 * 256 + 6 * 4, 192 + 22)  # LR | 5 methods | GT, 256 px wide each


def test_evaluate_without_a_trained_checkpoint_says_how_to_get_one(evaluated, tmp_path: Path, monkeypatch) -> None:
    root, _, _ = evaluated
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["evaluate", "--benchmark", str(root / "bench")])
    assert res.exit_code == 2
    assert res.output.strip() == (
        "error: no trained checkpoint: neither models/grpo nor models/sft holds one; "
        "train one with `dvc repro sft` (or `make pipeline`), or pass --model DIR"
    )


_PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
  }
  document.body.setAttribute("data-probed", "yes");
});
</script></body>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium: {INSTALL_CHROMIUM}")
def test_report_renders_in_headless_chromium(evaluated, tmp_path: Path) -> None:
    _, out, _ = evaluated
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing outside the file
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE))
    dom = _chromium(tmp_path, "--dump-dom", probed.as_uri()).stdout
    assert 'data-probed="yes"' in dom
    for method in METHODS:
        assert f'<tr data-method="{method}">' in dom
    for m in METRICS:
        assert f'data-metric="{m.name}"' in dom and f">{m.label} " in dom
    assert dom.count('class="skipped"') == len(DEEP) * len(METHODS)
    # the best of each computed column is bold, in the row of the best method
    means = json.loads((out / "metrics.json").read_text())["means"]
    for metric, pick in (("psnr", max), ("gmsd", min), ("niqe", min)):
        best = pick(METHODS, key=lambda m: means[m][metric])
        row = re.search(rf'<tr data-method="{re.escape(best)}">(.*?)</tr>', dom).group(1)
        cell = re.findall(r"<td[^>]*>(.*?)</td>", row)[[m.name for m in METRICS].index(metric)]
        assert cell.startswith("<b>"), (metric, best, cell)
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)" data-natural="(\d+)x(\d+)">', dom)
    assert [i[0] for i in imgs] == ["astronaut", "coffee"] and dom.count("<img") == 2
    for name, data, w, h in imgs:  # the browser decoded each image, at the size of the sheet PNG
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (int(w), int(h)) == Image.open(out / f"sheets/{name}.png").size
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1600,1200", (out / "report.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1200, 1600) and pixels.std() > 10  # a rendered page, not a blank one



# ------------------------------------------------------------------------------ the evaluate stage
@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, tiny_parts) -> Path:
    """The evaluate stage run on a tiny project: its initial policy as models/sft and models/grpo,
    a paired benchmark folder of two real photos and a folder of another method's outputs."""
    import shutil

    import yaml

    from tests.helpers import grpo_project, run_stage

    root = grpo_project(tmp_path_factory.mktemp("stage"), tiny_parts)
    shutil.copytree(root / "models/sft", root / "models/grpo")
    for csv_file in ("plots/sft/train.csv", "plots/grpo/train.csv"):  # plots/sft/val.csv missing: that curve is left out
        (root / csv_file).parent.mkdir(parents=True, exist_ok=True)
        (root / csv_file).write_text("step,loss,reward,format_mean\n1,6.5,1.5,0.5\n2,6.25,1.75,0.75\n")
    for name, box in (("astronaut", (0, 120, 64, 64)), ("coffee", (100, 200, 64, 64))):
        gt, lr = gt_and_lr(name, box)
        _save(root / f"photos/LR/{name}.png", lr)
        _save(root / f"photos/HR/{name}.png", gt)
        _save(root / f"others/nearest/photos/{name}.png", cv2.resize(lr, gt.shape[1::-1], interpolation=cv2.INTER_NEAREST))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["val_samples"] = 3
    params["evaluate"].update(sheets=2, device="cpu", benchmarks=["photos"], methods={"nearest": "others/nearest"}, unseen_short_side=64, unseen_draws=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(root, "evaluate")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "val (3 images): PSNR-Y bicubic" in err and "photos (2 images)" in err
    return root


@pytest.mark.stage
def test_stage_writes_the_table_per_benchmark_and_method(staged: Path) -> None:
    from realsr_r1.config import load_params
    from realsr_r1.release import lookup

    metrics = json.loads((staged / "metrics/evaluate.json").read_text())
    assert set(metrics) == {"val", "unseen", "photos"}
    val = metrics["val"]
    assert val["images"] == 3 and set(val["skipped"].split(", ")) == set(DEEP)
    assert set(val) - {"images", "skipped"} == {"bicubic", "realesrgan", "base", "tokenizer", "sft", "sft_sampled", "grpo", "grpo_sampled"}
    assert val["realesrgan"]["seams"] < val["grpo_sampled"]["seams"]  # the peer draws no code grid
    for method in ("sft", "grpo_sampled"):
        assert {"psnr", "ssim", "gmsd", "seams", "reward_format", "reward_total"} <= set(val[method])
        assert "niqe" not in val[method]  # 64 px crops: no-reference quality only on whole photos
        assert not set(DEEP) & set(val[method])  # skipped: absent, never 0
    assert "reward_total" not in val["bicubic"]
    assert val["tokenizer"]["psnr"] > val["bicubic"]["psnr"]  # the GT's own codes beat any LR-only guess
    assert val["sft"] == val["grpo"]  # the same weights, the same seeds: the same figures
    unseen = metrics["unseen"]  # the photos `realsr unseen` scores, degraded by the stage
    assert unseen["images"] == 12 and set(unseen) - {"images", "skipped"} == {"bicubic", "realesrgan", "base", "tokenizer", "sft", "grpo"}
    assert (staged / "reports/evaluate/unseen/report.html").is_file()
    photos = metrics["photos"]
    assert photos["images"] == 2 and set(photos) - {"images", "skipped"} == {"bicubic", "realesrgan", "base", "tokenizer", "sft", "grpo", "nearest"}
    # the publish gate's default key resolves to GRPO's PSNR-Y on val
    key = load_params(staged / "params.yaml").publish.metric
    assert lookup({"evaluate": metrics}, key) == val["grpo"]["psnr"]
    rows = list(csv.DictReader(io.StringIO((staged / "reports/evaluate/val/per_image.csv").read_text())))
    assert len(rows) == 3 * 8 and all(r["reward_total"] for r in rows if r["method"].startswith("grpo"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium: {INSTALL_CHROMIUM}")
@pytest.mark.stage
def test_stage_report_shows_sheets_with_the_chain_and_the_curves(staged: Path, tmp_path: Path) -> None:
    report = staged / "reports/evaluate/val/report.html"
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", _PROBE))
    dom = _chromium(tmp_path, "--dump-dom", probed.as_uri()).stdout
    for method in ("bicubic", "tokenizer", "sft", "sft_sampled", "grpo", "grpo_sampled"):
        assert f'<tr data-method="{method}">' in dom
    assert 'data-metric="reward_total"' in dom
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,[^"]+" data-natural="(\d+)x(\d+)">', dom)
    names = [i[0] for i in imgs]
    assert len(names) == 2 + 2 and names[2:] == ["SFT train loss", "GRPO rewards"], names  # 2 sheets, then the curves
    assert all(int(w) > 0 and int(h) > 0 for _, w, h in imgs)  # every image decoded
    sheet = np.asarray(Image.open(staged / f"reports/evaluate/val/sheets/{names[0]}.png"))
    # LR | bicubic | sft | grpo | GT in the first row; the captions under sft / grpo; grpo's 3 chain images below
    assert sheet.shape[1] == 6 * 256 + 5 * 4 and sheet.shape[0] > 2 * (256 + 22)  # LR | bicubic | realesrgan | sft | grpo | GT
    # the folder benchmark's report: its own table, every sheet and curve decoded, nothing external
    page = (staged / "reports/evaluate/photos/report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    probed.write_text(page.replace("</body>", _PROBE))
    dom = _chromium(tmp_path, "--dump-dom", probed.as_uri()).stdout
    assert all(f'<tr data-method="{m}">' in dom for m in ("bicubic", "tokenizer", "sft", "grpo", "nearest"))
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,[^"]+" data-natural="(\d+)x(\d+)">', dom)
    assert [i[0] for i in imgs] == ["astronaut", "coffee", "SFT train loss", "GRPO rewards"] and dom.count("<img") == 4
