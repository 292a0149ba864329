"""BasicSR 1.4.2, the Real-ESRGAN reference, driven by this project's recorded degradation draws.

Shared by the benchmarks and the tests that compare with the reference. `make install` puts
BasicSR in `.basicsr/` (pip `--no-deps --target`, git-ignored), never in the project
environment: the `realsr_r1` library does not depend on it, and nothing installs at run time.
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from realsr_r1.degrade import apply_degradation, ops
from realsr_r1.degrade.describe import SEVERITIES, noise_severity

BASICSR_DIR = Path(__file__).resolve().parent.parent / ".basicsr"
INSTALL = "make install (pip install --no-deps --no-build-isolation --target .basicsr basicsr==1.4.2)"


@functools.cache
def load_basicsr() -> SimpleNamespace:
    """Import BasicSR from `.basicsr/`, with the shim current torchvision needs; one clear line if absent."""
    if not (BASICSR_DIR / "basicsr").is_dir():
        raise RuntimeError(f"BasicSR 1.4.2 not found in {BASICSR_DIR}: run {INSTALL}")
    import torchvision.transforms.functional as tvf

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)  # removed in torchvision 0.17
    sys.path.insert(0, str(BASICSR_DIR))
    from basicsr.data import degradations
    from basicsr.utils import DiffJPEG, USMSharp
    from basicsr.utils.img_process_util import filter2D, usm_sharp

    return SimpleNamespace(degradations=degradations, DiffJPEG=DiffJPEG, USMSharp=USMSharp, filter2D=filter2D,
                           usm_sharp=usm_sharp)


def reference_kernel(spec: dict[str, Any], pad_to: int) -> np.ndarray:
    """BasicSR's kernel for a recorded blur/sinc spec, zero-padded as RealESRGANDataset pads it."""
    deg = load_basicsr().degradations
    size, kind = spec["kernel_size"], spec["kernel_type"]
    if kind == "sinc":
        k = deg.circular_lowpass_kernel(spec["sinc_cutoff"], size, pad_to=False)
    else:
        args = (size, spec["sigma_x"], spec["sigma_y"], spec["rotation"])
        iso = not kind.endswith("aniso")
        if kind in ("iso", "aniso"):
            k = deg.bivariate_Gaussian(*args, isotropic=iso)
        elif kind.startswith("generalized"):
            k = deg.bivariate_generalized_Gaussian(*args, spec["beta"], isotropic=iso)
        else:
            k = deg.bivariate_plateau(*args, spec["beta"], isotropic=iso)
    pad = (pad_to - size) // 2
    return np.pad(k, ((pad, pad), (pad, pad)))


def _tensor(img: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def reference_noise(img: np.ndarray, noise: dict[str, Any]) -> np.ndarray:
    """BasicSR's add_*_noise_pt (clip, no rounding) on a float HxWx3 image: the noisy image."""
    deg = load_basicsr().degradations
    x = _tensor(img)
    if noise["type"] == "gaussian":
        y = deg.add_gaussian_noise_pt(x, sigma=noise["sigma"], gray_noise=float(noise["gray"]), clip=True, rounds=False)
    else:
        y = deg.add_poisson_noise_pt(x, scale=noise["scale"], gray_noise=float(noise["gray"]), clip=True, rounds=False)
    return y[0].permute(1, 2, 0).numpy()


def reference_degradation(gt: np.ndarray, draw: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
    """RealESRGANModel.feed_data on one uint8 GT with the parameters of a recorded draw.

    BasicSR's kernels, filter2D, torch interpolation, noise and DiffJPEG; returns the uint8 LR and
    the measured noise std per stage (0-255), as `apply_degradation` does.
    """
    import torch
    import torch.nn.functional as F

    ref = load_basicsr()
    jpeger = _jpeger()
    pad = draw["kernel_pad"]
    measured: dict[str, float] = {}

    def blur(x: torch.Tensor, spec: dict[str, Any]) -> torch.Tensor:
        # the all-zero frame is dropped (same result) so that small crops fit torch's reflect padding;
        # smaller still (a kernel wider than the image, never in a 400 px patch) pad as OpenCV does
        k = torch.from_numpy(ops.trim_kernel(reference_kernel(spec, pad))).float()
        if k.shape[-1] // 2 < min(x.shape[-2:]):
            return ref.filter2D(x, k[None])
        r = k.shape[-1] // 2
        padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect"))
        return F.conv2d(padded.view(-1, 1, *padded.shape[-2:]), k[None, None]).view(x.shape)

    def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
        return jpeger(torch.clamp(x, 0, 1), quality=x.new_tensor([float(quality)]))

    with torch.no_grad():
        x = _tensor(gt) / 255.0
        for name in ("stage1", "stage2"):
            stage = draw[name]
            if stage["blur"]["applied"]:
                x = blur(x, stage["blur"])
            resize = stage["resize"]
            mode = resize["interpolation"]
            if name == "stage1":  # stage 1 resizes by a factor, stage 2 to a size (as the reference)
                x = F.interpolate(x, scale_factor=resize["scale"], mode=mode)
            else:
                x = F.interpolate(x, size=tuple(resize["size"]), mode=mode)
            noisy = _tensor(reference_noise(x[0].permute(1, 2, 0).numpy(), stage["noise"]))
            measured[f"{name}_noise_std"] = float((noisy - torch.clamp(x, 0, 1)).std(unbiased=False) * 255.0)
            x = jpeg(noisy, stage["jpeg"]["quality"])
        final = draw["final"]

        def final_resize(x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=tuple(final["resize"]["size"]), mode=final["resize"]["interpolation"])
            return blur(x, final["sinc"]) if final["sinc"]["applied"] else x

        if final["order"] == "resize_then_jpeg":
            x = jpeg(final_resize(x), final["jpeg"]["quality"])
        else:
            x = final_resize(jpeg(x, final["jpeg"]["quality"]))
        lr = torch.clamp((x * 255.0).round(), 0, 255)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    return lr, measured


@functools.cache
def _jpeger():
    return load_basicsr().DiffJPEG(differentiable=False)


def chain_noise_stds(pairs: list[tuple[np.ndarray, dict[str, Any]]]) -> dict[str, list[float]]:
    """Measured noise stds (0-255, both stages) of the same (GT, draw) pairs: this project vs BasicSR."""
    out: dict[str, list[float]] = {"realsr-r1": [], "BasicSR 1.4.2": []}
    for gt, draw in pairs:
        out["realsr-r1"] += apply_degradation(gt, draw)[1].values()
        out["BasicSR 1.4.2"] += reference_degradation(gt, draw)[1].values()
    return out


def noise_histograms(stds: dict[str, list[float]]) -> dict[str, Counter]:
    """Light / medium / heavy noise counts (the grades of `describe`) per side."""
    return {name: Counter(noise_severity(v) for v in values) for name, values in stds.items()}


def format_histograms(hists: dict[str, Counter]) -> str:
    """The noise histograms side by side, one line per severity."""
    names = list(hists)
    lines = ["noise severity  " + "  ".join(f"{n:>14}" for n in names)]
    lines += [f"{sev + ' noise':<16}" + "  ".join(f"{hists[n][sev]:>14d}" for n in names) for sev in SEVERITIES]
    return "\n".join(lines)
