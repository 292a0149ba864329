"""Real-ESRGAN x4plus (ncnn, CPU) as the evaluation's peer: x4 outputs, deterministic, sharper than
bicubic and closer to the GT's detail on real photos, tiles that agree with one whole pass, and a
named reason when the extra is missing."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import skimage.data

from realsr_r1.evaluate import realesrgan
from realsr_r1.evaluate.benchmark import bicubic_upscale

pytestmark = pytest.mark.skipif(realesrgan.unavailable() is not None, reason=str(realesrgan.unavailable()))


@pytest.fixture(scope="module")
def model() -> realesrgan.RealESRGAN:
    return realesrgan.RealESRGAN(threads=1)


def detail(image: np.ndarray) -> float:
    """Mean absolute horizontal luma gradient: how much fine detail an image holds."""
    return float(np.abs(np.diff(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float), axis=1)).mean())


def test_x4_uint8_and_deterministic(model: realesrgan.RealESRGAN) -> None:
    lr = cv2.resize(skimage.data.chelsea()[100:164, 100:164], (16, 16), interpolation=cv2.INTER_AREA)
    out = model.upscale(lr)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out, model.upscale(lr))


@pytest.mark.parametrize("name", ["chelsea", "astronaut"])
def test_restores_detail_bicubic_lacks(model: realesrgan.RealESRGAN, name: str) -> None:
    gt = np.ascontiguousarray(getattr(skimage.data, name)()[:256, :256])
    lr = cv2.resize(cv2.GaussianBlur(gt, (0, 0), 1.0), (64, 64), interpolation=cv2.INTER_AREA)
    out, bic = model.upscale(lr), bicubic_upscale(lr, gt.shape[:2])
    assert detail(bic) < detail(out) <= 1.1 * detail(gt)
    assert abs(detail(out) - detail(gt)) < abs(detail(bic) - detail(gt))


def test_tiles_agree_with_one_pass(model: realesrgan.RealESRGAN, monkeypatch: pytest.MonkeyPatch) -> None:
    lr = cv2.resize(skimage.data.coffee(), (80, 60), interpolation=cv2.INTER_AREA)
    whole = model.upscale(lr)
    monkeypatch.setattr(realesrgan, "TILE", 40)
    tiled = model.upscale(lr)
    assert tiled.shape == whole.shape == (240, 320, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).mean() < 0.6


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ncnn", None)
    why = realesrgan.unavailable()
    assert why is not None and "ncnn" in why and "peer" in why
    with pytest.raises(RuntimeError, match="peer extra"):
        realesrgan.RealESRGAN()
