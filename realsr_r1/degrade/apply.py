"""Apply a recorded degradation draw to a GT image: the Real-ESRGAN second-order pipeline.

Stage 1 then stage 2, each blur -> resize -> noise -> JPEG; then the final resize to the LR
size with a sinc filter and a JPEG, in the drawn order. A pure function of (GT, draw).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realsr_r1.degrade import ops
from realsr_r1.degrade.kernels import build_kernel


def _stage(img: np.ndarray, stage: dict[str, Any], pad: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One blur -> resize -> noise -> JPEG round; returns the image and the noise std (0-255)."""
    if stage["blur"]["applied"]:
        img = ops.filter2d(img, build_kernel(stage["blur"], pad))
    img = ops.resize(img, tuple(stage["resize"]["size"]), stage["resize"]["interpolation"])
    noise = stage["noise"]
    clean = np.clip(img, 0.0, 1.0)
    # noise goes onto the unclipped resize output (bicubic overshoots), then clips: as BasicSR
    if noise["type"] == "gaussian":
        noisy = ops.gaussian_noise(img, noise["sigma"], noise["gray"], rng)
    else:
        noisy = ops.poisson_noise(img, noise["scale"], noise["gray"], rng)
    noise_std = float(np.std(noisy - clean) * 255.0)
    img = noisy
    return ops.jpeg(img, stage["jpeg"]["quality"]), noise_std


def _final_resize(img: np.ndarray, final: dict[str, Any], pad: int) -> np.ndarray:
    img = ops.resize(img, tuple(final["resize"]["size"]), final["resize"]["interpolation"])
    if final["sinc"]["applied"]:
        img = ops.filter2d(img, build_kernel(final["sinc"], pad))
    return img


def apply_degradation(gt: np.ndarray, draw: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
    """Degrade a uint8 RGB GT by `draw`; returns the uint8 LR and the measured noise levels.

    The measured noise std per stage (0-255 scale) is what a viewer perceives; `describe`
    grades the noise severity by it, since Poisson noise strength depends on the image.
    """
    rng = np.random.default_rng(draw["noise_seed"])
    pad = draw["kernel_pad"]
    img = ops.to_float(gt)
    img, std1 = _stage(img, draw["stage1"], pad, rng)
    img, std2 = _stage(img, draw["stage2"], pad, rng)
    final = draw["final"]
    if final["order"] == "resize_then_jpeg":
        img = ops.jpeg(_final_resize(img, final, pad), final["jpeg"]["quality"])
    else:
        img = _final_resize(ops.jpeg(img, final["jpeg"]["quality"]), final, pad)
    return ops.to_uint8(img), {"stage1_noise_std": std1, "stage2_noise_std": std2}
