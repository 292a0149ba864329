"""The image operations of the degradation, on float32 HxWx3 RGB arrays in [0, 1].

Each is a pure function of its input and explicit parameters (noise takes a Generator), built
on OpenCV so one photo costs milliseconds on one core.
"""

from __future__ import annotations

import cv2
import numpy as np

INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def trim_kernel(kernel: np.ndarray) -> np.ndarray:
    """Drop the all-zero frame of a centred odd kernel: same result, fewer taps."""
    nonzero = np.flatnonzero(np.abs(kernel).max(axis=0) + np.abs(kernel).max(axis=1))
    if nonzero.size == 0:
        return kernel
    r = kernel.shape[0] // 2
    pad = min(int(nonzero[0]), kernel.shape[0] - 1 - int(nonzero[-1]), r)
    return kernel[pad : kernel.shape[0] - pad, pad : kernel.shape[1] - pad]


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with `kernel`, reflect borders (as BasicSR's filter2D)."""
    return cv2.filter2D(img, -1, trim_kernel(kernel), borderType=cv2.BORDER_REFLECT_101)


def resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize to (height, width) with one of `INTERPOLATION`; a no-op at the same size."""
    h, w = size_hw
    if (h, w) == img.shape[:2]:
        return img
    return cv2.resize(img, (w, h), interpolation=INTERPOLATION[interpolation])


def gaussian_noise(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma/255) noise, the same for all channels when `gray`; clipped to [0, 1] (as BasicSR)."""
    shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def poisson_noise(img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Add Poisson (shot) noise times `scale`, clipped to [0, 1], as BasicSR's add_poisson_noise_pt.

    The image (or its luma when `gray`) is first rounded to 8 bits, so the photon count
    2^ceil(log2(levels)) follows its 8-bit grey levels, not the float values a blur creates.
    """
    base = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if gray else img
    levels = np.clip(np.rint(base * 255.0), 0, 255).astype(np.uint8)
    vals = float(2 ** np.ceil(np.log2(np.count_nonzero(np.bincount(levels.ravel(), minlength=256)))))
    base = to_float(levels)
    noise = (rng.poisson(base * vals) / vals - base).astype(np.float32) * np.float32(scale)
    return np.clip(img + noise, 0.0, 1.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1], scale and round to 8 bits."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return img.astype(np.float32) * np.float32(1.0 / 255.0)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A real JPEG round trip (libjpeg through OpenCV) at `quality` in 1..100."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return to_float(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def usm_sharpen(img: np.ndarray, radius: int = 50, weight: float = 0.5, threshold: int = 10) -> np.ndarray:
    """Unsharp masking with a soft threshold mask, as Real-ESRGAN sharpens its GT (BasicSR's usm_sharp).

    The Gaussian's side is `radius` itself (+1 when even: 51 for 50) with OpenCV's default sigma.
    """
    ksize = radius + 1 if radius % 2 == 0 else radius
    blur = cv2.GaussianBlur(img, (ksize, ksize), 0)
    residual = img - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft = cv2.GaussianBlur(mask, (ksize, ksize), 0)
    sharp = np.clip(img + weight * residual, 0.0, 1.0)
    return soft * sharp + (1.0 - soft) * img
