"""`realsr init-policy` and `realsr upscale`: untrained checkpoint, tiles, odd inputs, errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from realsr_r1.cli import app
from realsr_r1.policy.record import TrainingRecord, write_record
from realsr_r1.policy.upscale import feather, tile_origins
from tests.helpers import tiny_policy_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_parts) -> tuple[Path, Path]:
    return tiny_policy_checkpoint(tmp_path_factory.mktemp("cli"), tiny_parts, max_text_tokens=6)


def test_upscale_rgba_photo_writes_4x_rgb_and_steps(checkpoint, tmp_path: Path) -> None:
    model, params = checkpoint
    rgba = Image.fromarray(skimage.data.chelsea()).resize((100, 75)).convert("RGBA")
    rgba.save(tmp_path / "cat.png")
    res = runner.invoke(
        app,
        ["upscale", str(tmp_path / "cat.png"), "-o", str(tmp_path / "out.png"), "--model", str(model),
         "--params", str(params), "--show-cot", "--steps-dir", str(tmp_path / "steps"), "--seed", "3"],
    )
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "out.png")
    assert out.size == (400, 300) and out.mode == "RGB"
    assert Image.open(tmp_path / "steps/middle_image.png").size == (200, 150)
    assert Image.open(tmp_path / "steps/rough_image.png").size == (100, 75)
    assert "degradation:" in res.output and "final understanding:" in res.output
    # said up front: the checkpoint is untrained, how many tiles, and the time measured on the first batch
    assert "is untrained (the initial random weights written by init-policy)" in res.output
    assert "48 tiles of 16x16 px on cpu" in res.output
    assert re.search(r"estimated time: [\d.]+ s \([\d.]+ s per tile x 48 tiles, measured on the first 32\)", res.output)
    # and the length guard in words: what it means and what to change
    assert "48 of 48 tiles never closed a text block within rollout.max_text_tokens=6 tokens" in res.output
    assert "raise rollout.max_text_tokens" in res.output


def test_upscale_of_a_trained_checkpoint_says_nothing_about_training(checkpoint, tmp_path: Path) -> None:
    model, params = checkpoint
    trained = tmp_path / "trained"
    shutil.copytree(model, trained)
    write_record(TrainingRecord().then("sft", steps=10), trained)
    Image.fromarray(skimage.data.chelsea()).resize((16, 16)).save(tmp_path / "cat.png")
    res = runner.invoke(app, ["upscale", str(tmp_path / "cat.png"), "-o", str(tmp_path / "o.png"), "--model", str(trained),
                              "--params", str(params), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "untrained" not in res.output and "1 tiles of 16x16 px on cpu, expected decoding" in res.output
    sampled = runner.invoke(app, ["upscale", str(tmp_path / "cat.png"), "-o", str(tmp_path / "s.png"), "--model", str(trained),
                                  "--params", str(params), "--device", "cpu", "--decode", "sample"])  # fmt: skip
    assert sampled.exit_code == 0 and "sample decoding" in sampled.output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(tmp_path / "s.png")))
    bad = runner.invoke(app, ["upscale", str(tmp_path / "cat.png"), "-o", str(tmp_path / "b.png"), "--decode", "mean"])
    assert bad.exit_code == 2 and "--decode 'mean': expected sample or expected" in bad.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_upscale_on_cuda_without_one_is_one_line(checkpoint, tmp_path: Path) -> None:
    model, _ = checkpoint
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    res = runner.invoke(app, ["upscale", str(tmp_path / "ok.png"), "-o", str(tmp_path / "x.png"), "--model", str(model), "--device", "cuda"])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "sees no CUDA device" in res.output


def test_upscale_grey_and_tiny_inputs(checkpoint, tmp_path: Path) -> None:
    model, params = checkpoint
    Image.fromarray(skimage.data.camera()).resize((12, 9)).save(tmp_path / "grey.png")
    res = runner.invoke(app, ["upscale", str(tmp_path / "grey.png"), "-o", str(tmp_path / "g.png"), "--model", str(model), "--params", str(params)])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g.png").size == (48, 36)


def test_upscale_errors_are_one_line(checkpoint, tmp_path: Path) -> None:
    model, _ = checkpoint
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = runner.invoke(app, ["upscale", str(tmp_path / "bad.png"), "-o", str(tmp_path / "x.png"), "--model", str(model)])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "bad.png" in res.output
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    res = runner.invoke(app, ["upscale", str(tmp_path / "ok.png"), "-o", str(tmp_path / "x.png"), "--model", str(tmp_path / "none")])
    assert res.exit_code == 2 and "not a policy checkpoint" in res.output and not (tmp_path / "x.png").exists()


def test_tiles_cover_and_blend_without_seams() -> None:
    assert tile_origins(100, 16, 4) == [0, 12, 24, 36, 48, 60, 72, 84]
    assert tile_origins(16, 16, 4) == [0] and tile_origins(17, 16, 4) == [0, 1]
    # two overlapping tiles of constant colour blend to a constant: weights sum to a smooth ramp
    w = feather(64, 16)
    acc = np.zeros(112)
    wsum = np.zeros(112)
    for start, value in ((0, 10.0), (48, 20.0)):
        acc[start : start + 64] += value * w
        wsum[start : start + 64] += w
    blended = acc / wsum
    assert np.all(np.abs(np.diff(blended)) <= 10.0 / 16 + 1e-9)  # no jump larger than one ramp step


def test_tiles_blend_to_the_whole_image_result(tiny_parts) -> None:
    """With a zero residual codebook every tile decodes to its own bicubic upsampling: the
    blended tiles must match the bicubic upsampling of the whole photo (no seams)."""
    import torch

    from realsr_r1.policy.interface import Sampling
    from realsr_r1.policy.tiny import TinyPolicy
    from realsr_r1.policy.upscale import upscale
    from realsr_r1.tokenizers.base import bicubic
    from realsr_r1.tokenizers.image import to_tensor, to_uint8
    from realsr_r1.tokenizers.kmeans import KMeansTokenizer
    from tests.helpers import tiny_policy_config

    _, image_tok, text_tok = tiny_parts
    zero = KMeansTokenizer(image_tok.config, torch.zeros_like(image_tok.codebook))
    policy = TinyPolicy.build(tiny_policy_config(num_layers=1), text_tok, zero)
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((60, 44), Image.LANCZOS))
    out = upscale(policy, photo, Sampling(max_text_tokens=2), overlap=4).images["final_image"]
    whole = to_uint8(bicubic(to_tensor(photo), (176, 240)))[0]
    assert out.shape == whole.shape == (176, 240, 3)
    err = np.abs(out.astype(float) - whole.astype(float))
    assert 10 * np.log10(255**2 / (err**2).mean()) > 30  # tiles agree with the whole-image result
    # no seam: the error on tile-boundary columns is no worse than the error elsewhere
    starts = [x * 4 for x in tile_origins(60, 16, 4)[1:]]
    boundary = np.concatenate([err[:, s - 2 : s + 2] for s in starts], axis=1).mean()
    assert boundary < 3 * err.mean() + 1.0


def test_unseen_scores_model_and_bicubic_on_y(checkpoint, tmp_path: Path) -> None:
    """`realsr unseen`: fixed-seed degradation, the model's and bicubic's PSNR/SSIM on Y; the bicubic
    figure recomputed independently (OpenCV bicubic, BT.601 luma by hand, PSNR from the MSE)."""
    import json

    import cv2

    from realsr_r1.config import load_params
    from realsr_r1.data.images import read_photo
    from realsr_r1.unseen import degraded_pair

    model, params_path = checkpoint
    raw = yaml.safe_load(params_path.read_text())
    raw["evaluate"].update(unseen_short_side=64, unseen_draws=2)  # small photos: 96x64, two LR tiles
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    (folder / "notes.txt").write_text("not a photo")
    args = ["unseen", str(folder), "--model", str(model), "--params", str(tmp_path / "p.yaml"), "--decode", "expected"]
    res = runner.invoke(app, [*args, "--json", str(tmp_path / "u.json")])
    assert res.exit_code == 0, res.output
    assert re.search(r"model - bicubic: [+-]\d+\.\d\d dB \(expected decoding\)", res.output)
    scores = json.loads((tmp_path / "u.json").read_text())["photos"]
    # in name order, draw k of photo i seeded i + 2k
    assert [s["photo"] for s in scores] == ["astronaut#0.png", "astronaut#1.png", "coffee#0.png", "coffee#1.png"]

    params = load_params(tmp_path / "p.yaml")
    gt, lr, text = degraded_pair(read_photo(folder / "coffee.png"), params, seed=3)
    again = degraded_pair(read_photo(folder / "coffee.png"), params, seed=3)
    assert np.array_equal(again[1], lr) and text == scores[3]["degradation"] and gt.shape == (64, 96, 3)
    assert scores[2]["degradation"] != text
    y = lambda rgb: 16.0 + rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0
    bic = cv2.resize(lr, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)
    c = slice(4, -4)  # the upscaling factor, cropped at each edge
    psnr = 10 * np.log10(255.0**2 / np.mean((y(bic)[c, c] - y(gt)[c, c]) ** 2))
    assert abs(scores[3]["bicubic_psnr"] - psnr) < 0.1
    assert 0 < scores[3]["ssim"] <= 1 and np.isfinite(scores[3]["psnr"])

    res = runner.invoke(app, ["unseen", str(tmp_path / "nowhere"), "--model", str(model), "--params", str(tmp_path / "p.yaml")])
    assert res.exit_code == 2 and "nowhere: no such folder" in res.output


def test_upscale_without_model_takes_the_newest_trained_checkpoint_or_says_how(checkpoint, tmp_path: Path, monkeypatch) -> None:
    """No --model: models/grpo, else models/sft; neither there: one line naming how to get one."""
    model, params = checkpoint
    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).resize((16, 16)).save(photo)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["upscale", str(photo), "-o", "out.png", "--params", str(params)])
    assert res.exit_code == 2 and "no trained checkpoint" in res.output and "dvc repro sft" in res.output
    assert len(res.output.strip().splitlines()) == 1
    shutil.copytree(model, tmp_path / "models/sft")
    res = runner.invoke(app, ["upscale", str(photo), "-o", "out.png", "--params", str(params)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out.png").is_file() and "models/sft" in res.output  # the untrained note names it
