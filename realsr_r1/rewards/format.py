"""Format reward: 1 when a completion is the full seven-block chain with images of the right size.

The parser (`vlcot.parse`) checks the blocks; this reward adds the images: each image block must
hold a uint8 HxWx3 array whose size is the GT size divided by the block's downscale (1/4, 1/2, 1).
A truncated sample (a length guard closed a text block by force or cut the sample) scores 0 even
when it parses: otherwise a policy could write past the text cap and still be rewarded for format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from realsr_r1.vlcot import IMAGE_BLOCK_DOWNSCALE, IMAGE_BLOCKS, VLCoT


def expected_shapes(gt_size: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
    """Shape each image block must have for a GT of `gt_size` (h, w)."""
    h, w = gt_size
    return {b: (h // IMAGE_BLOCK_DOWNSCALE[b], w // IMAGE_BLOCK_DOWNSCALE[b], 3) for b in IMAGE_BLOCKS}


def image_problem(image: Any, shape: tuple[int, int, int]) -> str | None:
    """Why `image` is not a well-formed uint8 RGB image of `shape`, or None when it is."""
    if not isinstance(image, np.ndarray):
        return f"not an array ({type(image).__name__})"
    if image.dtype != np.uint8:
        return f"dtype {image.dtype}, expected uint8"
    if image.shape != shape:
        return f"shape {image.shape}, expected {shape}"
    return None


def format_reward(
    chains: Sequence[VLCoT | None],
    gt_sizes: Sequence[tuple[int, int]],
    truncated: Sequence[bool] | None = None,
) -> np.ndarray:
    """1.0 per chain that parsed (not None), was not truncated and whose three images have the
    expected shapes, else 0.0."""
    truncated = [False] * len(chains) if truncated is None else truncated
    out = np.zeros(len(chains), dtype=np.float64)
    for i, (chain, size, cut) in enumerate(zip(chains, gt_sizes, truncated, strict=True)):
        if chain is None or cut:
            continue
        shapes = expected_shapes(size)
        out[i] = float(all(image_problem(getattr(chain, b), shapes[b]) is None for b in IMAGE_BLOCKS))
    return out
