"""Rebuild the shipped examples from a real photo of the scikit-image wheel (chelsea, the cat).

    python examples/make.py     # writes examples/reward/ and examples/photo.png

`reward/case.json` reproduces the paper's two worked examples on a 64x64 crop: the predicted
degradation list matches 3 of 5 items (reward 0.6) and `<rough_understand>` names 3 of 4 tags
(reward 0.75). Its images are an imperfect restoration (the GT lightly blurred), so the
generation reward sits below what the GT itself would get.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

from realsr_r1.atomic import write_bytes
from realsr_r1.data.images import encode_png
from realsr_r1.rewards.case import write_case
from realsr_r1.vlcot import VLCoT, render

HERE = Path(__file__).resolve().parent
GT_DEGRADATION = "medium blur, downsample, medium noise, light compression, upsample"
PREDICTED = "light blur, downsample, heavy noise, light compression, upsample"  # blur and noise graded wrong
TAGS = ["cat", "eyes", "whiskers", "collar"]  # the rough text below names the first three


def _resize(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def main() -> None:
    photo = data.chelsea()  # 300x451 RGB
    gt = _resize(photo[20:280, 80:340], 64)
    final = cv2.GaussianBlur(gt, (0, 0), 0.8)
    chain = VLCoT(
        degradation=PREDICTED,
        rough_understand="A tabby cat's face, green eyes and white whiskers, close up.",
        rough_image=_resize(final, 16),
        middle_understand="A brown tabby cat with striped fur, green eyes, a pink nose and white whiskers.",
        middle_image=_resize(final, 32),
        final_understand="A short-haired brown tabby cat: ginger and black stripes, green eyes, long white whiskers.",
        final_image=final,
    )
    write_case(HERE / "reward" / "case.json", render(chain), GT_DEGRADATION, TAGS, gt)
    small = cv2.resize(photo[40:240, 100:367], (64, 48), interpolation=cv2.INTER_AREA)
    write_bytes(HERE / "photo.png", encode_png(small))


if __name__ == "__main__":
    main()
