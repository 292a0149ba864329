"""Draw every parameter of one second-order degradation, per sample, as a JSON-able record.

The record is the single source of truth: `apply.apply_degradation` rebuilds the LR from it
and the GT alone, and `describe.describe` turns it into the (operation, severity) list.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from realsr_r1.config import (
    BlurParams,
    DegradationParams,
    DegradationStage,
    JpegParams,
    NoiseParams,
    ResizeParams,
)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    names = list(probs)
    return names[int(rng.choice(len(names), p=np.array([probs[n] for n in names]) / sum(probs.values())))]


def _kernel_size(rng: np.random.Generator, sizes: tuple[int, int]) -> int:
    return int(rng.choice(np.arange(sizes[0], sizes[1] + 1, 2)))


def _split_beta(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """Half the draws from [min, 1], half from [1, max] (BasicSR's rule for shape betas)."""
    lo, hi = lo_hi
    return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, hi))


def draw_sinc(rng: np.random.Generator, sizes: tuple[int, int], size: int | None = None, wide: bool = True) -> dict[str, Any]:
    """A sinc (ringing) kernel: cutoff U[pi/3, pi] for small kernels, U[pi/5, pi] from size 13 on if `wide`."""
    size = _kernel_size(rng, sizes) if size is None else size
    lo = math.pi / 5 if (wide and size >= 13) else math.pi / 3
    return {"kernel_type": "sinc", "kernel_size": size, "sinc_cutoff": float(rng.uniform(lo, math.pi))}


def draw_blur(rng: np.random.Generator, p: BlurParams, sizes: tuple[int, int]) -> dict[str, Any]:
    """Blur kernel: sinc with `p.sinc_prob`, else one of the six Gaussian-family kernels."""
    size = _kernel_size(rng, sizes)
    if rng.uniform() < p.sinc_prob:
        return {"applied": True, **draw_sinc(rng, sizes, size=size)}
    kind = _choice(rng, p.kernel_probs)
    sigma_x = _uniform(rng, p.sigma)
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma_y, rotation = sigma_x, 0.0
    else:
        sigma_y, rotation = _uniform(rng, p.sigma), float(rng.uniform(-math.pi, math.pi))
    spec: dict[str, Any] = {
        "applied": True,
        "kernel_type": kind,
        "kernel_size": size,
        "sigma_x": sigma_x,
        "sigma_y": sigma_y,
        "rotation": rotation,
    }
    if kind.startswith("generalized"):
        spec["beta"] = _split_beta(rng, p.generalized_beta)
    elif kind.startswith("plateau"):
        spec["beta"] = _split_beta(rng, p.plateau_beta)
    return spec


def draw_resize(rng: np.random.Generator, p: ResizeParams) -> dict[str, Any]:
    direction = _choice(rng, p.probs)
    scale = {"up": lambda: _uniform(rng, p.up), "down": lambda: _uniform(rng, p.down), "keep": lambda: 1.0}[direction]()
    interpolation = p.interpolations[int(rng.integers(len(p.interpolations)))]
    return {"direction": direction, "scale": scale, "interpolation": interpolation}


def draw_noise(rng: np.random.Generator, p: NoiseParams) -> dict[str, Any]:
    gaussian = bool(rng.uniform() < p.gaussian_prob)
    spec: dict[str, Any] = {"type": "gaussian" if gaussian else "poisson"}
    if gaussian:
        spec["sigma"] = _uniform(rng, p.gaussian_sigma)
    else:
        spec["scale"] = _uniform(rng, p.poisson_scale)
    spec["gray"] = bool(rng.uniform() < p.gray_prob)
    return spec


def draw_jpeg(rng: np.random.Generator, p: JpegParams) -> dict[str, Any]:
    return {"quality": int(rng.integers(p.quality[0], p.quality[1] + 1))}


def _draw_stage(rng: np.random.Generator, p: DegradationStage, sizes: tuple[int, int]) -> dict[str, Any]:
    blur = draw_blur(rng, p.blur, sizes)
    if rng.uniform() >= p.blur.prob:
        blur = {"applied": False}
    return {"blur": blur, "resize": draw_resize(rng, p.resize), "noise": draw_noise(rng, p.noise), "jpeg": draw_jpeg(rng, p.jpeg)}


def draw_degradation(
    rng: np.random.Generator, p: DegradationParams, gt_hw: tuple[int, int], scale: int
) -> dict[str, Any]:
    """All parameters of one degradation of a GT of size `gt_hw`, including every output size."""
    h, w = gt_hw
    lr_h, lr_w = h // scale, w // scale
    stage1 = _draw_stage(rng, p.stage1, p.kernel_sizes)
    s1 = stage1["resize"]["scale"]
    stage1["resize"]["size"] = [max(1, int(h * s1)), max(1, int(w * s1))]
    stage2 = _draw_stage(rng, p.stage2, p.kernel_sizes)
    s2 = stage2["resize"]["scale"]
    # stage 2 resizes relative to the final LR size, as Real-ESRGAN does
    stage2["resize"]["size"] = [max(1, int(lr_h * s2)), max(1, int(lr_w * s2))]
    order = "resize_then_jpeg" if rng.uniform() < 0.5 else "jpeg_then_resize"
    interpolation = p.final.interpolations[int(rng.integers(len(p.final.interpolations)))]
    sinc = draw_sinc(rng, p.kernel_sizes, wide=False)
    sinc["applied"] = bool(rng.uniform() < p.final.sinc_prob)
    final = {
        "order": order,
        "resize": {"interpolation": interpolation, "size": [lr_h, lr_w]},
        "sinc": sinc,
        "jpeg": draw_jpeg(rng, p.final.jpeg),
    }
    return {
        "scale": scale,
        "gt_size": [h, w],
        "kernel_pad": p.kernel_sizes[1],
        "noise_seed": int(rng.integers(2**63 - 1)),
        "stage1": stage1,
        "stage2": stage2,
        "final": final,
    }
