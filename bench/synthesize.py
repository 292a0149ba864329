"""Degradation throughput: this project's synthesis vs BasicSR 1.4.2 driven the Real-ESRGAN way.

Both sides get the same 256x256 GT crops of real photos, already in memory, and both include
GT sharpening (USM) in the timing. Reference: per-sample kernels on the CPU (RealESRGANDataset),
then batched filter2D / resize / noise / DiffJPEG / USMSharp in torch (RealESRGANModel.feed_data),
batch 12. Ours: per-sample OpenCV/NumPy on a process pool. Then end-to-end `realsr synthesize`
(decode, degrade, three GT scales, PNG encode, tar) with 1 and 2 workers.

BasicSR lives in `.basicsr/` (put there by `make install`; see bench/reference.py), never in the
project environment. Run: python -m bench.synthesize [--pairs 240] [--batches 4]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.reference import load_basicsr
from realsr_r1.config import DegradationParams
from realsr_r1.data.synthesis import degrade_sample, sample_rng
from realsr_r1.degrade import ops


def gt_crops(n: int, size: int = 256) -> list[np.ndarray]:
    """`n` GT crops of the bundled photos at least `size` px, cycling over photos and positions."""
    from realsr_r1.data.images import read_photo
    from realsr_r1.data.sources import list_source

    rng = np.random.default_rng(0)
    images = [read_photo(f.location) for f in list_source("bundled", [".png", ".jpg"]) if f.name != "annotations.json"]
    images = [img for img in images if min(img.shape[:2]) >= size]
    crops = []
    for i in range(n):
        img = images[i % len(images)]
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crops.append(np.ascontiguousarray(img[y : y + size, x : x + size]))
    return crops


# ------------------------------------------------------------------------------------ ours
def _ours_one(args: tuple[int, np.ndarray]) -> int:
    index, gt = args
    sharp = ops.to_uint8(ops.usm_sharpen(ops.to_float(gt)))
    lr, _ = degrade_sample(sharp, DegradationParams(), 4, sample_rng(0, str(index), 0))
    return lr.shape[0]


def bench_ours(crops: list[np.ndarray], workers: int) -> float:
    import cv2

    cv2.setNumThreads(1)
    with mp.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        pool.map(_ours_one, list(enumerate(crops[: 2 * workers])))  # warm-up
        start = time.perf_counter()
        pool.map(_ours_one, list(enumerate(crops)), chunksize=8)
        return len(crops) / (time.perf_counter() - start)


# ------------------------------------------------------------------------------- reference
def reference_kernels(deg, rng_py: random.Random) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RealESRGANDataset.__getitem__'s kernel draws (RealESRNet x4plus options)."""
    kernel_range = [2 * v + 1 for v in range(3, 11)]
    kinds = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
    probs = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]

    def one(sigma: list[float]) -> np.ndarray:
        size = rng_py.choice(kernel_range)
        if np.random.uniform() < 0.1:
            omega = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
            k = deg.circular_lowpass_kernel(omega, size, pad_to=False)
        else:
            k = deg.random_mixed_kernels(kinds, probs, size, sigma, sigma, [-math.pi, math.pi], [0.5, 4], [1, 2], noise_range=None)
        pad = (21 - size) // 2
        return np.pad(k, ((pad, pad), (pad, pad)))

    k1, k2 = one([0.2, 3]), one([0.2, 1.5])
    if np.random.uniform() < 0.8:
        size = rng_py.choice(kernel_range)
        sinc = deg.circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21)
    else:
        sinc = np.zeros((21, 21))
        sinc[10, 10] = 1
    return k1, k2, sinc


def bench_reference(crops: list[np.ndarray], batches: int, batch: int = 12) -> float:
    import torch
    import torch.nn.functional as F

    ref = load_basicsr()
    deg, filter2D = ref.degradations, ref.filter2D
    jpeger, usm = ref.DiffJPEG(differentiable=False), ref.USMSharp()
    rng_py = random.Random(0)
    np.random.seed(0)
    torch.manual_seed(0)

    def feed(gt_batch: list[np.ndarray]) -> torch.Tensor:
        # dataset side: per-sample kernels, image to tensor
        ks = [reference_kernels(deg, rng_py) for _ in gt_batch]
        gt = torch.from_numpy(np.stack(gt_batch)).permute(0, 3, 1, 2).contiguous().float() / 255.0
        k1, k2, sinc = (torch.from_numpy(np.stack([k[i] for k in ks])).float() for i in range(3))
        # model side: RealESRGANModel.feed_data, options of RealESRNet x4plus
        gt_usm = usm(gt)
        h, w = gt.shape[2:]
        out = filter2D(gt_usm, k1)
        kind = random.choices(["up", "down", "keep"], [0.2, 0.7, 0.1])[0]
        scale = np.random.uniform(1, 1.5) if kind == "up" else np.random.uniform(0.15, 1) if kind == "down" else 1
        out = F.interpolate(out, scale_factor=scale, mode=random.choice(["area", "bilinear", "bicubic"]))
        if np.random.uniform() < 0.5:
            out = deg.random_add_gaussian_noise_pt(out, sigma_range=[1, 30], clip=True, rounds=False, gray_prob=0.4)
        else:
            out = deg.random_add_poisson_noise_pt(out, scale_range=[0.05, 3], gray_prob=0.4, clip=True, rounds=False)
        out = jpeger(torch.clamp(out, 0, 1), quality=out.new_zeros(out.size(0)).uniform_(30, 95)).contiguous()
        if np.random.uniform() < 0.8:
            out = filter2D(out, k2)
        kind = random.choices(["up", "down", "keep"], [0.3, 0.4, 0.3])[0]
        scale = np.random.uniform(1, 1.2) if kind == "up" else np.random.uniform(0.3, 1) if kind == "down" else 1
        out = F.interpolate(out, size=(int(h / 4 * scale), int(w / 4 * scale)), mode=random.choice(["area", "bilinear", "bicubic"]))
        if np.random.uniform() < 0.5:
            out = deg.random_add_gaussian_noise_pt(out, sigma_range=[1, 25], clip=True, rounds=False, gray_prob=0.4)
        else:
            out = deg.random_add_poisson_noise_pt(out, scale_range=[0.05, 2.5], gray_prob=0.4, clip=True, rounds=False)
        quality = out.new_zeros(out.size(0)).uniform_(30, 95)
        if np.random.uniform() < 0.5:
            out = F.interpolate(out, size=(h // 4, w // 4), mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2D(out, sinc)
            out = jpeger(torch.clamp(out, 0, 1), quality=quality).contiguous()
        else:
            out = jpeger(torch.clamp(out, 0, 1), quality=quality).contiguous()
            out = F.interpolate(out, size=(h // 4, w // 4), mode=random.choice(["area", "bilinear", "bicubic"]))
            out = filter2D(out, sinc)
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0

    with torch.no_grad():
        feed(crops[:batch])  # warm-up
        start = time.perf_counter()
        for b in range(batches):
            feed(crops[b * batch : (b + 1) * batch])
        return batches * batch / (time.perf_counter() - start)


# ------------------------------------------------------------------------------ end to end
def bench_end_to_end(workers: int) -> float:
    """`realsr synthesize` on the bundled photos (256 px GT): pairs/s as the command reports it."""
    from realsr_r1.data.sources import BUNDLED_PHOTOS, list_source

    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for f in list_source("bundled", [".png", ".jpg"]):
            if f.name in BUNDLED_PHOTOS:
                (photos / f.name).write_bytes(Path(f.location).read_bytes())
        run = subprocess.run(
            [sys.executable, "-m", "realsr_r1.cli", "synthesize", "--input", str(photos), "--out", f"{tmp}/out",
             "--gt-size", "256", "--crops-per-image", "4", "--per-image", "8", "--workers", str(workers)],
            capture_output=True, text=True, check=True,
        )
        return float(re.search(r"\(([\d.]+) pairs/s\)", run.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=240, help="pairs for this project's side")
    parser.add_argument("--batches", type=int, default=4, help="batches of 12 for the BasicSR side")
    args = parser.parse_args()
    workers = len(os.sched_getaffinity(0))
    crops = gt_crops(max(args.pairs, 12 * (args.batches + 1)))

    ours = bench_ours(crops[: args.pairs], workers)
    print(f"realsr-r1 synthesis  : {ours:7.1f} pairs/s  (256x256 GT, USM included, {workers} processes)")
    reference = bench_reference(crops, args.batches)
    print(f"BasicSR 1.4.2 (torch): {reference:7.1f} pairs/s  (batch 12, {workers} threads)")
    e2e = {w: bench_end_to_end(w) for w in (1, 2)}
    print(f"realsr synthesize end to end: {e2e[1]:.1f} pairs/s with 1 worker, {e2e[2]:.1f} with 2 ({e2e[2] / e2e[1]:.2f}x)")
    print(f"ratio realsr-r1 / BasicSR: {ours / reference:.1f}x")


if __name__ == "__main__":
    main()
