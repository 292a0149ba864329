"""Full-reference quality on the luma (Y) channel, the one way every stage and script measures it.

The convention, as super-resolution papers and BasicSR report it:
- Y is ITU-R BT.601 YCbCr luma (MATLAB's `rgb2ycbcr`); pyiqa's own default Y is YIQ's, whose
  PSNRs sit 1.3 dB apart. PSNR is taken on the unrounded Y (as BasicSR), SSIM on Y rounded to
  integers (as MATLAB's uint8 path), both with pyiqa's colour conversion.
- `border(output, lr)` pixels are dropped at every edge: the upscaling factor (BasicSR's
  `crop_border = scale`), where the upsampler's padding lives.

SSIM and MS-SSIM compute pyiqa's float64 statistics with the 11x11 Gaussian window applied as two
1-D passes (22 multiply-adds a pixel instead of 121; equal to pyiqa within 1e-6, tested against it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pyiqa.archs.func_util import preprocess_rgb

from realsr_r1.iqa import pyiqa_scores
from realsr_r1.tokenizers.image import to_tensor

WINDOW, SIGMA = 11, 1.5
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # per scale, finest first


def border(output_side: int, lr_side: int) -> int:
    """Pixels dropped at each edge of an output upscaled from `lr_side` to `output_side`: the factor."""
    if lr_side <= 0 or output_side % lr_side:
        raise ValueError(f"an output side of {output_side} px is not a whole multiple of the LR side {lr_side}")
    return output_side // lr_side


def crop(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """An NCHW batch without `pixels` at each edge."""
    if pixels < 0:
        raise ValueError(f"crop border {pixels}: expected >= 0")
    if pixels == 0:
        return images
    if min(images.shape[-2:]) <= 2 * pixels:
        raise ValueError(f"crop border {pixels} leaves nothing of a {images.shape[-1]}x{images.shape[-2]} image")
    return images[..., pixels:-pixels, pixels:-pixels]


def psnr_y(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) on Y per image of NCHW batches in [0, 1] (already cropped)."""
    return pyiqa_scores("psnry", x, ref, color_space="ycbcr")


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
    """SSIM on Y per image (pyiqa `ssim`, color_space ycbcr) of NCHW batches in [0, 1] (already cropped)."""
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


def psnr_ssim_y(
    preds: Sequence[np.ndarray] | torch.Tensor, gts: Sequence[np.ndarray] | torch.Tensor, pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """PSNR (dB) and SSIM on Y per image of uint8 RGB images (or NCHW batches in [0, 1]) against
    their ground truths of the same sizes, `pixels` dropped at each edge (see `border`)."""
    x = preds if isinstance(preds, torch.Tensor) else to_tensor(list(preds))
    ref = gts if isinstance(gts, torch.Tensor) else to_tensor(list(gts))
    if x.shape != ref.shape:
        raise ValueError(f"images differ in size: {tuple(x.shape)} vs {tuple(ref.shape)}")
    x, ref = crop(x, pixels), crop(ref, pixels)
    return psnr_y(x, ref).numpy(), ssim_y(x, ref).numpy()
