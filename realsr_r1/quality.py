"""Full-reference quality on the luma (Y) channel, as super-resolution papers report it.

Y is ITU-R BT.601 YCbCr luma (the MATLAB / BasicSR convention), computed by pyiqa with
`color_space="ycbcr"`; pyiqa's own default Y is YIQ's, whose PSNRs sit 1.3 dB apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from realsr_r1.rewards.generation import pyiqa_scores
from realsr_r1.tokenizers.image import to_tensor


def quality_y(images: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM on Y of uint8 RGB images against their ground truths (same sizes)."""
    x, ref = to_tensor(list(images)), to_tensor(list(gts))
    psnr = pyiqa_scores("psnry", x, ref, color_space="ycbcr")
    return float(psnr.mean()), float(pyiqa_scores("ssim", x, ref, color_space="ycbcr").mean())


def psnr_ssim_y(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM on Y of one uint8 RGB image against its ground truth."""
    if pred.shape != truth.shape:
        raise ValueError(f"images differ in size: {pred.shape} vs {truth.shape}")
    return quality_y([pred], [truth])
