"""The seam ratio: about 1 for real photos, well above 1 for a mosaic of 8x8 blocks, and it ranks
what a person sees: GT < bicubic < nearest-neighbour blocks < shuffled GT blocks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from realsr_r1.evaluate.seams import seam_ratio
from realsr_r1.tokenizers.image import to_tensor


def photo(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(skimage.data, name)()[:128, :128])


def shuffled_blocks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blocks = [image[y : y + 8, x : x + 8] for y in range(0, 128, 8) for x in range(0, 128, 8)]
    order = rng.permutation(len(blocks))
    rows = [np.concatenate([blocks[order[r * 16 + c]] for c in range(16)], 1) for r in range(16)]
    return np.concatenate(rows, 0)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ranks_gt_bicubic_blocks_and_a_mosaic(name: str) -> None:
    gt = photo(name)
    lr = cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA)
    bicubic = cv2.resize(lr, (128, 128), interpolation=cv2.INTER_CUBIC)
    nearest = cv2.resize(cv2.resize(gt, (16, 16), interpolation=cv2.INTER_AREA), (128, 128), interpolation=cv2.INTER_NEAREST)
    mosaic = shuffled_blocks(gt, np.random.default_rng(0))
    ratio = seam_ratio(to_tensor([gt, bicubic, nearest, mosaic])).tolist()
    assert 0.85 < ratio[0] < 1.15
    assert ratio[0] < ratio[2] and ratio[1] < ratio[2] and ratio[2] > 2.0 and ratio[3] > 1.5


def test_invariant_to_brightness_and_contrast() -> None:
    x = to_tensor([photo("coffee")])
    assert seam_ratio(x * 0.5 + 0.2).item() == pytest.approx(seam_ratio(x).item(), rel=1e-6)  # float32 pixels


def test_too_small_an_image_is_refused() -> None:
    with pytest.raises(ValueError, match="above the 8 px grid"):
        seam_ratio(torch.zeros(1, 3, 8, 8))
