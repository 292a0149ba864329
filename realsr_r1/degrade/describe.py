"""The ordered (operation, severity) description of a degradation and its text form.

This is the `<degradation>` block's ground truth and the vocabulary of the degradation
reward. Operations: blur, ringing, noise, compression (graded light / medium / heavy) and
downsample, upsample (no grade). Thresholds (documented in the README):

- blur: spatial std of the kernel in pixels (`kernels.kernel_spread`): light < 1, medium < 2, else heavy
- ringing (sinc kernel): cutoff in radians: light >= 0.75 pi, medium >= 0.5 pi, else heavy
- noise: measured std of the added noise on a 0-255 scale: light < 10, medium < 20, else heavy
- compression: JPEG quality: light >= 75, medium >= 50, else heavy
"""

from __future__ import annotations

import math
from typing import Any

from realsr_r1.degrade.kernels import build_kernel, kernel_spread

SEVERITIES = ("light", "medium", "heavy")
GRADED_OPERATIONS = ("blur", "ringing", "noise", "compression")
RESIZE_OPERATIONS = ("downsample", "upsample")

Item = tuple[str, str | None]


def _grade(value: float, light_below: float, medium_below: float) -> str:
    return "light" if value < light_below else "medium" if value < medium_below else "heavy"


def blur_severity(spread_px: float) -> str:
    return _grade(spread_px, 1.0, 2.0)


def ringing_severity(cutoff: float) -> str:
    return _grade(-cutoff, -0.75 * math.pi, -0.5 * math.pi)


def noise_severity(std_255: float) -> str:
    return _grade(std_255, 10.0, 20.0)


def compression_severity(quality: int) -> str:
    return _grade(-quality, -75, -50)


def _kernel_item(spec: dict[str, Any], pad: int) -> Item:
    if spec["kernel_type"] == "sinc":
        return ("ringing", ringing_severity(spec["sinc_cutoff"]))
    return ("blur", blur_severity(kernel_spread(build_kernel(spec, pad))))


def _resize_item(src_hw: list[int], dst_hw: list[int]) -> list[Item]:
    src, dst = src_hw[0] * src_hw[1], dst_hw[0] * dst_hw[1]
    return [("downsample", None)] if dst < src else [("upsample", None)] if dst > src else []


def describe(draw: dict[str, Any], noise_stds: dict[str, float]) -> list[Item]:
    """The ordered operations of an applied draw (noise graded by `apply`'s measured stds)."""
    pad = draw["kernel_pad"]
    items: list[Item] = []
    size = draw["gt_size"]
    for name in ("stage1", "stage2"):
        stage = draw[name]
        if stage["blur"]["applied"]:
            items.append(_kernel_item(stage["blur"], pad))
        items += _resize_item(size, stage["resize"]["size"])
        size = stage["resize"]["size"]
        items.append(("noise", noise_severity(noise_stds[f"{name}_noise_std"])))
        items.append(("compression", compression_severity(stage["jpeg"]["quality"])))
    final = draw["final"]
    resize = _resize_item(size, final["resize"]["size"])
    if final["sinc"]["applied"]:
        resize.append(_kernel_item(final["sinc"], pad))
    jpeg = [("compression", compression_severity(final["jpeg"]["quality"]))]
    items += resize + jpeg if final["order"] == "resize_then_jpeg" else jpeg + resize
    return items


def to_text(items: list[Item]) -> str:
    """`[("blur", "medium"), ("downsample", None)]` -> `"medium blur, downsample"`."""
    return ", ".join(op if sev is None else f"{sev} {op}" for op, sev in items)


def from_text(text: str) -> list[Item]:
    """Parse the text form back into items; raises ValueError naming the first bad item."""
    items: list[Item] = []
    for raw in text.split(","):
        words = raw.strip().lower().split()
        if len(words) == 1 and words[0] in RESIZE_OPERATIONS:
            items.append((words[0], None))
        elif len(words) == 2 and words[0] in SEVERITIES and words[1] in GRADED_OPERATIONS:
            items.append((words[1], words[0]))
        else:
            raise ValueError(f"not a degradation item: {raw.strip()!r}")
    return items
