"""Full-reference quality on the luma (Y) channel, as super-resolution papers report it.

Y is ITU-R BT.601 luma in [16, 235] (scikit-image's `rgb2ycbcr`, the MATLAB convention); PSNR
and SSIM compare it with a data range of 255.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> float64 HxW Y in [16, 235]."""
    return rgb2ycbcr(rgb)[..., 0]


def psnr_ssim_y(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, capped at 100 for identical images) and SSIM of two uint8 RGB images on Y."""
    if pred.shape != truth.shape:
        raise ValueError(f"images differ in size: {pred.shape} vs {truth.shape}")
    a, b = luma(pred), luma(truth)
    psnr = 100.0 if np.array_equal(a, b) else min(float(peak_signal_noise_ratio(b, a, data_range=255)), 100.0)
    win = max(3, min(7, min(a.shape) // 2 * 2 - 1))
    return psnr, float(structural_similarity(b, a, data_range=255, win_size=win))
