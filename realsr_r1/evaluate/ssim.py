"""SSIM and MS-SSIM on Y exactly as pyiqa computes them, with the Gaussian window applied as two
1-D passes: the same float64 statistics, 22 multiply-adds a pixel instead of 121.

pyiqa (`ssim_arch.ssim` / `ms_ssim`) filters Y (BT.601, x255, rounded like MATLAB's uint8
`rgb2ycbcr`) with an 11x11 Gaussian (sigma 1.5) as one 2-D float64 convolution per statistic,
which is most of an evaluation's time. The window is the outer product of a 1-D Gaussian, so
filtering rows then columns gives the same result (to float rounding: `tests/test_evaluate.py`
compares with pyiqa itself). The colour conversion is pyiqa's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyiqa.archs.func_util import preprocess_rgb

WINDOW, SIGMA = 11, 1.5
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # per scale, finest first


def _window() -> torch.Tensor:
    """pyiqa's `fspecial(11, 1.5)`, factored: a normalised 1-D Gaussian (float64)."""
    half = (WINDOW - 1) / 2
    g = torch.tensor([math.exp(-((i - half) ** 2) / (2 * SIGMA**2)) for i in range(WINDOW)], dtype=torch.float64)
    return g / g.sum()


def _blur(stats: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'valid' Gaussian filtering of every channel: down the rows, then along them."""
    c = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(stats, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image of (N, 1, H, W) float64 Y in [0, 255]."""
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), g).unbind(1)
    sigma_x, sigma_y, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = F.relu((2 * sigma_xy + C2) / (sigma_x + sigma_y + C2))  # pyiqa keeps it non-negative
    ssim = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1) * cs
    return ssim.mean((1, 2)), cs.mean((1, 2))


def _y(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) float64 Y in [0, 255], rounded (pyiqa's preprocessing)."""
    return preprocess_rgb(images, True, 255, "ycbcr").to(torch.float64)


def ssim_y(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """SSIM on Y per image (pyiqa `ssim`, color_space ycbcr)."""
    return _ssim_cs(_y(pred), _y(gt), _window())[0]


def ms_ssim_y(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """MS-SSIM on Y per image (pyiqa `ms_ssim`, color_space ycbcr): five scales, 2x2 average
    pooling between them, the contrast-structure terms of the first four and SSIM of the last."""
    x, y, g = _y(pred), _y(gt), _window()
    weights = torch.tensor(MS_WEIGHTS, dtype=torch.float32).to(x)  # pyiqa builds them in float32
    terms = []
    for _ in MS_WEIGHTS:
        ssim, cs = _ssim_cs(x, y, g)
        terms.append(cs)
        padding = (x.shape[2] % 2, x.shape[3] % 2)
        x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
    cs = torch.stack(terms[:-1])
    return torch.prod(cs ** weights[:-1].unsqueeze(1), 0) * ssim ** weights[-1]
