"""Unit tests of every degradation operation and kernel."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from realsr_r1.degrade import ops
from realsr_r1.degrade.kernels import (
    build_kernel,
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_spread,
    plateau_kernel,
    sinc_kernel,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return ops.to_float(data.astronaut()[:128, :128].copy())


@pytest.mark.parametrize("size", [7, 13, 21])
@pytest.mark.parametrize(
    "make",
    [
        lambda s: gaussian_kernel(s, 1.5, 1.5, 0.0),
        lambda s: gaussian_kernel(s, 0.5, 2.5, 0.7),
        lambda s: generalized_gaussian_kernel(s, 1.2, 2.0, -1.0, 0.6),
        lambda s: plateau_kernel(s, 2.0, 1.0, 2.5, 1.5),
        lambda s: sinc_kernel(s, math.pi / 3),
    ],
)
def test_kernels_sum_to_one_and_have_their_size(size: int, make) -> None:
    k = make(size)
    assert k.shape == (size, size)
    assert abs(k.sum() - 1.0) < 1e-9


def test_padding_and_isotropy() -> None:
    spec = {"kernel_type": "iso", "kernel_size": 7, "sigma_x": 1.0, "sigma_y": 1.0, "rotation": 0.0}
    k = build_kernel(spec, 21)
    assert k.shape == (21, 21) and k.dtype == np.float32
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    assert k[:7].sum() == 0  # zero padding outside the 7x7 core


def test_rotation_turns_an_anisotropic_kernel() -> None:
    a = gaussian_kernel(21, 0.5, 3.0, 0.0)
    b = gaussian_kernel(21, 0.5, 3.0, math.pi / 2)
    assert np.allclose(a, b.T, atol=1e-9)
    assert kernel_spread(a) == pytest.approx(kernel_spread(b))


def test_kernel_spread_matches_gaussian_sigma() -> None:
    assert kernel_spread(gaussian_kernel(21, 2.0, 2.0, 0.0)) == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("cutoff", [math.pi / 4, math.pi / 2])
def test_sinc_kernel_is_a_low_pass_with_its_cutoff(cutoff: float) -> None:
    k = sinc_kernel(21, cutoff)
    response = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(256, 256))))
    freqs = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi  # radians per pixel
    fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
    radius = np.hypot(fx, fy)
    passband = response[radius < 0.6 * cutoff].mean()
    stopband = response[(radius > 1.5 * cutoff) & (radius < math.pi)].mean()
    assert passband > 0.85 and stopband < 0.1


def test_filter_preserves_a_flat_image() -> None:
    flat = np.full((32, 32, 3), 0.4, np.float32)
    out = ops.filter2d(flat, gaussian_kernel(21, 2.0, 2.0, 0.0).astype(np.float32))
    assert np.allclose(out, 0.4, atol=1e-5)


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resize_sizes(photo: np.ndarray, mode: str) -> None:
    assert ops.resize(photo, (37, 50), mode).shape == (37, 50, 3)
    assert ops.resize(photo, (128, 128), mode) is photo


def test_gaussian_noise_statistics() -> None:
    img = np.full((256, 256, 3), 0.5, np.float32)
    rng = np.random.default_rng(0)
    noisy = ops.gaussian_noise(img, 20.0, gray=False, rng=rng)
    noise = (noisy - img) * 255
    assert noise.std() == pytest.approx(20.0, rel=0.03)
    assert abs(noise.mean()) < 0.3
    gray = ops.gaussian_noise(img, 20.0, gray=True, rng=rng)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_poisson_noise_is_signal_dependent() -> None:
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.linspace(0.05, 0.95, 256, dtype=np.float32)[None, :, None], 256, axis=0).repeat(3, axis=2)
    noise = ops.poisson_noise(ramp, 2.0, gray=False, rng=rng) - ramp
    dark, bright = noise[:, :64].std(), noise[:, -64:].std()
    assert bright > dark > 0
    assert abs(noise.mean()) < 3e-3  # zero-mean up to the clipping at 1 on the bright end


def test_jpeg_quality_controls_the_error(photo: np.ndarray) -> None:
    errors = [np.abs(ops.jpeg(photo, q) - photo).mean() for q in (20, 60, 95)]
    assert errors[0] > errors[1] > errors[2] > 0
    assert ops.jpeg(photo, 50).shape == photo.shape


def test_usm_sharpens_edges_and_keeps_flat_areas(photo: np.ndarray) -> None:
    sharp = ops.usm_sharpen(photo)
    lap = lambda x: cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
    assert lap(sharp) > lap(photo)
    flat = np.full((64, 64, 3), 0.3, np.float32)
    assert np.allclose(ops.usm_sharpen(flat), flat, atol=1e-6)


def test_trimming_the_zero_frame_changes_nothing(photo: np.ndarray) -> None:
    spec = {"kernel_type": "aniso", "kernel_size": 9, "sigma_x": 0.8, "sigma_y": 2.0, "rotation": 0.4}
    padded = build_kernel(spec, 21)
    assert ops.trim_kernel(padded).shape == (9, 9)
    full = cv2.filter2D(photo, -1, padded, borderType=cv2.BORDER_REFLECT_101)
    assert np.allclose(ops.filter2d(photo, padded), full, atol=1e-6)
