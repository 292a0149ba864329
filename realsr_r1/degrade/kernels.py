"""Blur and ringing kernels of the Real-ESRGAN degradation (BasicSR's definitions, in NumPy).

Every kernel is a pure function of its parameters, so a recorded draw rebuilds it exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _grid(size: int) -> np.ndarray:
    """(size, size, 2) pixel offsets from the kernel centre."""
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _mahalanobis2(size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """Squared Mahalanobis distance of each kernel pixel under the rotated covariance."""
    c, s = np.cos(rotation), np.sin(rotation)
    u = np.array([[c, -s], [s, c]])
    cov = u @ np.diag([sigma_x**2, sigma_y**2]) @ u.T
    grid = _grid(size)
    return np.sum((grid @ np.linalg.inv(cov)) * grid, axis=-1)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """Anisotropic Gaussian (isotropic when sigma_x == sigma_y)."""
    k = np.exp(-0.5 * _mahalanobis2(size, sigma_x, sigma_y, rotation))
    return k / k.sum()


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float) -> np.ndarray:
    """Generalized Gaussian exp(-0.5 d^(2 beta)): flat-topped for beta > 1, heavy-tailed below."""
    k = np.exp(-0.5 * np.power(_mahalanobis2(size, sigma_x, sigma_y, rotation), beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float) -> np.ndarray:
    """Plateau-shaped kernel 1 / (1 + d^(2 beta))."""
    k = 1.0 / (np.power(_mahalanobis2(size, sigma_x, sigma_y, rotation), beta) + 1.0)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """2-D circular low-pass (sinc) kernel with angular cutoff in (0, pi]: ringing artefacts."""
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(x - centre, y - centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[int(centre), int(centre)] = cutoff**2 / (4 * np.pi)
    return k / k.sum()


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an odd square kernel to `size` x `size` (Real-ESRGAN pads every kernel to 21)."""
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, pad) if pad > 0 else kernel


def build_kernel(spec: dict, pad_to: int) -> np.ndarray:
    """The float32 kernel for a recorded blur spec (see `draw.draw_blur`)."""
    size = spec["kernel_size"]
    kind = spec["kernel_type"]
    if kind == "sinc":
        k = sinc_kernel(size, spec["sinc_cutoff"])
    elif kind in ("iso", "aniso"):
        k = gaussian_kernel(size, spec["sigma_x"], spec["sigma_y"], spec["rotation"])
    elif kind.startswith("generalized"):
        k = generalized_gaussian_kernel(size, spec["sigma_x"], spec["sigma_y"], spec["rotation"], spec["beta"])
    elif kind.startswith("plateau"):
        k = plateau_kernel(size, spec["sigma_x"], spec["sigma_y"], spec["rotation"], spec["beta"])
    else:
        raise ValueError(f"unknown kernel type {kind!r}")
    return pad_kernel(k, pad_to).astype(np.float32)


def kernel_spread(kernel: np.ndarray) -> float:
    """Spatial standard deviation of a kernel in pixels, sqrt((var_x + var_y) / 2).

    One number for every kernel shape, so blur severity is comparable across kernel types.
    """
    grid = _grid(kernel.shape[0])
    w = np.clip(kernel.astype(np.float64), 0, None)
    w = w / w.sum()
    return float(np.sqrt(np.sum(w[..., None] * grid**2) / 2))
