"""Seams: how much a picture's luma jumps across an 8-px grid compared with inside it.

The chain draws images as a grid of codes, each coding an 8x8 block (the tokenizer's factor);
when neighbouring blocks disagree the grid shows as seams, a defect PSNR barely sees. The ratio
is the mean absolute luma step between pixels on either side of a grid line over the mean step
between neighbours inside a block, both directions together: about 1 for a photo, and above 1 as
blocks show (bicubic's own interpolation grid gives a little over 1).
"""

from __future__ import annotations

import torch

GRID = 8  # px: the chain's code size (tokenizer.image.factor of the tiny and the Janus presets)
LUMA = (0.299, 0.587, 0.114)  # BT.601 weights; the ratio does not depend on the offset or range


def seam_ratio(images: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """Per image of an NCHW RGB batch in [0, 1] (sides > grid): the seam ratio (float64)."""
    if min(images.shape[-2:]) <= grid:
        raise ValueError(f"seam ratio needs sides above the {grid} px grid, got {images.shape[-1]}x{images.shape[-2]}")
    y = torch.einsum("nchw,c->nhw", images.to(torch.float64), torch.tensor(LUMA, dtype=torch.float64))
    across, inside = [], []
    for plane in (y, y.transpose(1, 2)):  # steps along rows, then along columns
        step = (plane[:, :, 1:] - plane[:, :, :-1]).abs()
        on_line = (torch.arange(step.shape[2]) + 1) % grid == 0  # between px grid - 1 and grid, 2 grid - 1 and 2 grid, ...
        across.append(step[:, :, on_line].flatten(1))
        inside.append(step[:, :, ~on_line].flatten(1))
    return torch.cat(across, 1).mean(1) / torch.cat(inside, 1).mean(1).clamp_min(1e-12)
