"""The one PSNR/SSIM-Y path (`realsr_r1.quality`) against its references: BasicSR's
`calculate_psnr` / `calculate_ssim` with `test_y_channel` and `crop_border` (the convention the
field reports), NumPy and scikit-image on MATLAB's Y, and pyiqa's SSIM / MS-SSIM."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from skimage.metrics import structural_similarity

from bench.reference import load_basicsr
from realsr_r1.evaluate.benchmark import bicubic_upscale
from realsr_r1.iqa import pyiqa_scores
from realsr_r1.quality import border, ms_ssim_y, psnr_ssim_y, ssim_y
from realsr_r1.tokenizers.image import to_tensor
from tests.helpers import gt_and_lr


def y_bt601(img: np.ndarray, rounded: bool) -> np.ndarray:
    """BT.601 luma in [16, 235] of uint8 RGB (MATLAB's rgb2ycbcr; `rounded` as for uint8 input)."""
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return np.round(y) if rounded else y


def one(pred: np.ndarray, gt: np.ndarray, pixels: int) -> tuple[float, float]:
    psnr, ssim = psnr_ssim_y([pred], [gt], pixels)
    return float(psnr[0]), float(ssim[0])


def test_psnr_and_ssim_equal_basicsr_with_its_crop_border() -> None:
    """BasicSR 1.4.2 (the reference of the field's tables) on BGR input, Y channel, crop_border 4."""
    load_basicsr()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    for name, box in (("coffee", (100, 200, 96, 128)), ("astronaut", (0, 100, 64, 64)), ("chelsea", (50, 120, 128, 96))):
        gt, lr = gt_and_lr(name, box)
        pred = bicubic_upscale(lr, gt.shape[:2])
        psnr, ssim = one(pred, gt, border(gt.shape[1], lr.shape[1]))
        bgr = pred[..., ::-1].copy(), gt[..., ::-1].copy()
        assert psnr == pytest.approx(calculate_psnr(*bgr, crop_border=4, test_y_channel=True), abs=2e-3)
        # BasicSR filters the unrounded Y, pyiqa (and MATLAB's uint8 path) the rounded one: 3e-3 apart at most here
        assert ssim == pytest.approx(calculate_ssim(*bgr, crop_border=4, test_y_channel=True), abs=5e-3)


def test_psnr_ssim_y_with_crop_match_numpy_and_skimage() -> None:
    gt, lr = gt_and_lr("coffee", (100, 200, 96, 128))
    pred = bicubic_upscale(lr, gt.shape[:2])
    psnr, ssim = one(pred, gt, 4)
    c = slice(4, -4)
    # PSNR on the unrounded Y (BasicSR's convention); pyiqa computes it in float32: 1e-3 dB
    a, b = y_bt601(pred, False)[c, c], y_bt601(gt, False)[c, c]
    assert psnr == pytest.approx(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)), abs=1e-3)
    # SSIM on Y rounded to integers at data range 255 (MATLAB's uint8 rgb2ycbcr)
    a, b = y_bt601(pred, True)[c, c], y_bt601(gt, True)[c, c]
    standard = structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim == pytest.approx(standard, abs=1e-3)


def test_the_crop_drops_the_edges_only() -> None:
    gt, lr = gt_and_lr("astronaut", (0, 100, 64, 64))
    pred = bicubic_upscale(lr, gt.shape[:2])
    edged = pred.copy()
    edged[:4], edged[-4:], edged[:, :4], edged[:, -4:] = 0, 255, 0, 255
    assert one(edged, gt, 4) == pytest.approx(one(pred, gt, 4), abs=1e-9)
    assert one(edged, gt, 0)[0] < one(pred, gt, 0)[0] - 1.0
    inner = pred.copy()
    inner[4:8, 4:8] = 255 - inner[4:8, 4:8]
    assert one(inner, gt, 4)[0] < one(pred, gt, 4)[0]
    with pytest.raises(ValueError, match="crop border 32 leaves nothing of a 64x64 image"):
        one(pred, gt, 32)


def test_the_border_is_the_upscaling_factor() -> None:
    assert border(64, 16) == 4 and border(32, 16) == 2 and border(16, 16) == 1
    with pytest.raises(ValueError, match="not a whole multiple"):
        border(60, 16)


def test_batched_scores_equal_one_at_a_time_and_sizes_must_match() -> None:
    gts = [gt_and_lr(n, (0, 0, 64, 64))[0] for n in ("astronaut", "coffee", "chelsea")]
    preds = [bicubic_upscale(gt_and_lr(n, (0, 0, 64, 64))[1], (64, 64)) for n in ("astronaut", "coffee", "chelsea")]
    psnr, ssim = psnr_ssim_y(preds, gts, 4)
    assert psnr.shape == ssim.shape == (3,) and len(set(psnr.round(3))) == 3
    for i in range(3):
        assert (psnr[i], ssim[i]) == pytest.approx(one(preds[i], gts[i], 4), abs=1e-9)
    with pytest.raises(ValueError, match="images differ in size"):
        psnr_ssim_y([preds[0][:32]], [gts[0]], 4)


@pytest.mark.parametrize("size", [(64, 64), (161, 170), (203, 317)])
def test_separable_ssim_and_ms_ssim_equal_pyiqa(size: tuple[int, int]) -> None:
    h, w = size
    gt = [np.ascontiguousarray(skimage.data.astronaut()[:h, :w]), np.ascontiguousarray(skimage.data.coffee()[:h, :w])]
    noisy = [np.clip(cv2.GaussianBlur(g, (5, 5), 1.5) + np.random.default_rng(0).normal(0, 8, g.shape), 0, 255) for g in gt]
    x, ref = to_tensor([n.astype(np.uint8) for n in noisy]), to_tensor(gt)
    theirs = pyiqa_scores("ssim", x, ref, color_space="ycbcr")
    assert torch.allclose(ssim_y(x, ref), theirs, atol=1e-6) and float(theirs.min()) < 0.9  # far from trivial
    assert torch.allclose(ssim_y(ref, ref), torch.ones(2, dtype=torch.float64))
    if min(h, w) >= 161:  # odd sides: pyiqa's padded pooling between scales
        assert torch.allclose(ms_ssim_y(x, ref), pyiqa_scores("ms_ssim", x, ref, color_space="ycbcr"), atol=1e-6)
