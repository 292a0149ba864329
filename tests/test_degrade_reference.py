"""The degradation against the reference itself: BasicSR 1.4.2 (installed by `make install`).

Same drawn parameters, same real input crops; kernels within 1e-6, USM within 1/255, noise std
within 5 % over many draws, and the effect statistics of the full second-order chain.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import skimage.data

from bench.reference import (
    chain_noise_stds,
    format_histograms,
    load_basicsr,
    noise_histograms,
    reference_kernel,
    reference_noise,
)
from realsr_r1.config import DegradationParams
from realsr_r1.data.prepare import GtCrop
from realsr_r1.degrade import draw_degradation, ops
from realsr_r1.degrade.draw import draw_blur, draw_resize, draw_sinc
from realsr_r1.degrade.kernels import build_kernel, sinc_kernel

P = DegradationParams()


@pytest.fixture(scope="module")
def ref():
    import torch

    torch.set_num_threads(1)
    return load_basicsr()


@pytest.fixture(scope="module")
def large_crops() -> list[np.ndarray]:
    """128 px float crops of real photos (the pipeline's 64 px ones come from `crops`)."""
    rng = np.random.default_rng(7)
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(skimage.data, name)()
        for _ in range(2):
            y, x = rng.integers(0, img.shape[0] - 128), rng.integers(0, img.shape[1] - 128)
            out.append(ops.to_float(np.ascontiguousarray(img[y : y + 128, x : x + 128])))
    return out


def test_mixed_kernels_equal_basicsr(ref) -> None:
    """random_mixed_kernels, replayed: its own draws rebuilt by `build_kernel`, within 1e-6."""
    kinds, probs = list(P.stage1.blur.kernel_probs), list(P.stage1.blur.kernel_probs.values())
    sigma, betag, betap = P.stage1.blur.sigma, P.stage1.blur.generalized_beta, P.stage1.blur.plateau_beta
    seen = set()
    for seed in range(240):
        size = 7 + 2 * (seed % 8)
        random.seed(seed)
        np.random.seed(seed)
        k_ref = ref.degradations.random_mixed_kernels(kinds, probs, size, sigma, sigma, [-math.pi, math.pi], betag, betap)
        # the same draws in BasicSR's order: type, sigma_x, (sigma_y, rotation), beta
        random.seed(seed)
        np.random.seed(seed)
        kind = random.choices(kinds, probs)[0]
        spec = {"kernel_type": kind, "kernel_size": size, "sigma_x": np.random.uniform(*sigma)}
        if kind.endswith("aniso"):
            spec.update(sigma_y=np.random.uniform(*sigma), rotation=np.random.uniform(-math.pi, math.pi))
        else:
            spec.update(sigma_y=spec["sigma_x"], rotation=0.0)
        if kind != "iso" and kind != "aniso":
            lo, hi = betag if kind.startswith("generalized") else betap
            spec["beta"] = np.random.uniform(lo, 1) if np.random.uniform() < 0.5 else np.random.uniform(1, hi)
        seen.add(kind)
        np.testing.assert_allclose(build_kernel(spec, size), k_ref, atol=1e-6, err_msg=str(spec))
    assert seen == set(kinds)


def test_drawn_kernels_and_sinc_equal_basicsr(ref) -> None:
    """Our own draws (blur, stage-1 sinc, final sinc) through BasicSR's kernel functions, within 1e-6."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = draw_blur(rng, P.stage1.blur, P.kernel_sizes)
        np.testing.assert_allclose(build_kernel(spec, 21), reference_kernel(spec, 21), atol=1e-6, err_msg=str(spec))
        sinc = draw_sinc(rng, P.kernel_sizes, wide=False)
        k_ref = ref.degradations.circular_lowpass_kernel(sinc["sinc_cutoff"], sinc["kernel_size"], pad_to=21)
        np.testing.assert_allclose(build_kernel(sinc, 21), k_ref, atol=1e-6)
        np.testing.assert_allclose(sinc_kernel(sinc["kernel_size"], sinc["sinc_cutoff"]),
                                   ref.degradations.circular_lowpass_kernel(sinc["sinc_cutoff"], sinc["kernel_size"]), atol=1e-9)


def test_usm_equals_basicsr(ref, large_crops: list[np.ndarray]) -> None:
    """ops.usm_sharpen vs BasicSR's usm_sharp (OpenCV) and USMSharp (torch, the training path)."""
    import torch

    usm = ref.USMSharp()
    for img in large_crops:
        ours = ops.usm_sharpen(img)
        assert np.abs(ours - ref.usm_sharp(img)).max() <= 1 / 255
        with torch.no_grad():
            torch_out = usm(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - torch_out).max() <= 1 / 255


def _noise_inputs(crops: list[GtCrop], large: list[np.ndarray]) -> list[np.ndarray]:
    """Images as the noise step sees them: blurred and resized by drawn stage-1 parameters."""
    rng = np.random.default_rng(3)
    out = []
    for img in [ops.to_float(c.image) for c in crops] + large:
        for _ in range(3):
            blur, resize = draw_blur(rng, P.stage1.blur, P.kernel_sizes), draw_resize(rng, P.stage1.resize)
            x = ops.filter2d(img, build_kernel(blur, P.kernel_sizes[1]))
            size = (max(8, int(img.shape[0] * resize["scale"])), max(8, int(img.shape[1] * resize["scale"])))
            out.append(ops.resize(x, size, resize["interpolation"]))
    return out


@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
@pytest.mark.parametrize("gray", [False, True], ids=["color", "gray"])
def test_noise_std_matches_basicsr(ref, crops: list[GtCrop], large_crops: list[np.ndarray], kind: str, gray: bool) -> None:
    """Per-channel noise std, summed over many (input, parameter) draws: within 5 % of BasicSR's."""
    rng = np.random.default_rng(11)
    ours_std = np.zeros(3)
    ref_std = np.zeros(3)
    for img in _noise_inputs(crops, large_crops):
        for _ in range(2):
            sigma, scale = rng.uniform(*P.stage1.noise.gaussian_sigma), rng.uniform(*P.stage1.noise.poisson_scale)
            clean = np.clip(img, 0, 1)
            if kind == "gaussian":
                ours = ops.gaussian_noise(img, sigma, gray, rng) - clean
            else:
                ours = ops.poisson_noise(img, scale, gray, rng) - clean
            theirs = reference_noise(img, {"type": kind, "gray": gray, "sigma": sigma, "scale": scale}) - clean
            if gray:
                for n in (ours, theirs):  # one noise field for the three channels where nothing clipped
                    inside = (img == clean).all(-1) & (n + clean > 0).all(-1) & (n + clean < 1).all(-1)
                    assert np.allclose(n[inside][:, 0], n[inside][:, 2], atol=1e-5)
            ours_std += ours.reshape(-1, 3).std(0) * 255
            ref_std += theirs.reshape(-1, 3).std(0) * 255
    ratio = ours_std / ref_std
    assert np.all(np.abs(ratio - 1) < 0.05), f"{kind} {'gray' if gray else 'color'}: std ours/BasicSR per channel {ratio}"


@pytest.fixture(scope="module")
def chain_stds(ref, crops: list[GtCrop]) -> dict[str, list[float]]:
    """The full second-order chain, this project's and BasicSR's, on the same 64 px crops and draws."""
    rng = np.random.default_rng(2024)
    pairs = [(c.image, draw_degradation(rng, P, c.image.shape[:2], 4)) for c in crops for _ in range(6)]
    return chain_noise_stds(pairs)


def test_second_order_chain_noise_matches_basicsr(chain_stds: dict[str, list[float]]) -> None:
    """Both stages' measured noise: mean within 10 %, and the light/medium/heavy histograms close."""
    hists = noise_histograms(chain_stds)
    table = format_histograms(hists)
    print("\n" + table)
    ours, theirs = (np.array(v) for v in chain_stds.values())
    assert abs(ours.mean() / theirs.mean() - 1) < 0.10, f"mean noise std {ours.mean():.2f} vs {theirs.mean():.2f}\n{table}"
    n = len(ours)
    a, b = hists.values()
    distance = sum(abs(a[s] - b[s]) for s in ("light", "medium", "heavy")) / (2 * n)
    assert distance < 0.10, f"noise histograms differ (total variation {distance:.2f})\n{table}"
