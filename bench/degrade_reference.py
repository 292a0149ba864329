"""How far this project's degradation is from BasicSR 1.4.2 (Real-ESRGAN), measured on real photos.

1. The noise histogram (light / medium / heavy, both stages) of the same draws through both
   chains: the recorded draws and GTs of `data/shards/train` when present (what
   `metrics/synthesize.json` counts), else fresh draws on crops of the bundled photos.
2. The known small deviations, each on the same inputs: OpenCV INTER_AREA vs torch `area`,
   libjpeg vs DiffJPEG, and degrading the GT crop rather than a 400 px patch cut afterwards.

Run: python -m bench.degrade_reference [--shards data/shards/train] [--limit 200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.reference import chain_noise_stds, format_histograms, load_basicsr, noise_histograms
from bench.synthesize import gt_crops
from realsr_r1.config import DegradationParams
from realsr_r1.degrade import apply_degradation, draw_degradation, ops


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def shard_pairs(split_dir: Path, limit: int) -> list[tuple[np.ndarray, dict]]:
    """(GT, recorded draw) of the first `limit` samples of a shard split."""
    from realsr_r1.data.shards import read_samples

    pairs = []
    for sample in read_samples(split_dir):
        pairs.append((sample.hr, sample.degradation))
        if len(pairs) == limit:
            break
    return pairs


def fresh_pairs(n: int, size: int) -> list[tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(0)
    return [(gt, draw_degradation(rng, DegradationParams(), gt.shape[:2], 4)) for gt in gt_crops(n, size)]


def area_deviation(crops: list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR, cv2 INTER_AREA vs torch area, for stage-1 down (x0.15-1) and up (x1-1.5) scales."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    out = {"down": [], "up": []}
    for img in crops:
        x = ops.to_float(img)
        for direction, lo_hi in (("down", (0.15, 1.0)), ("up", (1.0, 1.5))):
            scale = rng.uniform(*lo_hi)
            size = (int(x.shape[0] * scale), int(x.shape[1] * scale))
            ours = ops.resize(x, size, "area")
            t = torch.from_numpy(x).permute(2, 0, 1)[None]
            theirs = F.interpolate(t, scale_factor=scale, mode="area")[0].permute(1, 2, 0).numpy()
            out[direction].append(psnr(ours, theirs))
    return float(np.mean(out["down"])), float(np.mean(out["up"]))


def jpeg_deviation(crops: list[np.ndarray]) -> dict[int, tuple[float, float]]:
    """Per quality: PSNR(libjpeg, DiffJPEG) and, for scale, PSNR(input, libjpeg)."""
    import torch

    jpeger = load_basicsr().DiffJPEG(differentiable=False)
    out = {}
    for q in (30, 50, 70, 95):
        pairs = []
        for img in crops:
            x = ops.to_float(img)
            ours = ops.jpeg(x, q)
            with torch.no_grad():
                t = torch.from_numpy(x).permute(2, 0, 1)[None]
                theirs = jpeger(t, quality=t.new_tensor([float(q)]))[0].permute(1, 2, 0).numpy()
            pairs.append((psnr(ours, theirs), psnr(x, ours)))
        out[q] = tuple(np.mean(pairs, axis=0))
    return out


def patch_deviation(n: int, crop: int, patch: int = 400) -> tuple[float, float, str]:
    """Same parameters, applied to a `crop` px GT or to the `patch` px area around it (then cut)."""
    p = DegradationParams()
    stds: dict[str, list[float]] = {"crop": [], f"{patch} px patch": []}
    for i, big in enumerate(gt_crops(n, patch)):
        off = (patch - crop) // 2 // 4 * 4  # LR-aligned
        small = np.ascontiguousarray(big[off : off + crop, off : off + crop])
        # the parameters do not depend on the size, only the sizes derived from it
        d_small = draw_degradation(np.random.default_rng(i), p, small.shape[:2], 4)
        d_big = draw_degradation(np.random.default_rng(i), p, big.shape[:2], 4)
        m_small = apply_degradation(small, d_small)[1]
        m_big = apply_degradation(big, d_big)[1]
        stds["crop"] += m_small.values()
        stds[f"{patch} px patch"] += m_big.values()
    means = {k: float(np.mean(v)) for k, v in stds.items()}
    return means["crop"], means[f"{patch} px patch"], format_histograms(noise_histograms(stds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=Path("data/shards/train"))
    parser.add_argument("--limit", type=int, default=200, help="samples compared")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    pairs = shard_pairs(args.shards, args.limit) if args.shards.is_dir() else []
    source = f"{len(pairs)} samples of {args.shards}" if pairs else f"{args.limit} fresh draws on 64 px crops"
    pairs = pairs or fresh_pairs(args.limit, 64)
    stds = chain_noise_stds(pairs)
    print(f"1. noise of the same draws ({source}), both stages:")
    print(format_histograms(noise_histograms(stds)))
    means = {k: np.mean(v) for k, v in stds.items()}
    print("   mean measured noise std: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))

    crops = gt_crops(24, 128)
    down, up = area_deviation(crops)
    print(f"2. area resize, OpenCV INTER_AREA vs torch area, 128 px crops: PSNR {down:.1f} dB down, {up:.1f} dB up")
    print("3. JPEG, libjpeg (OpenCV) vs BasicSR DiffJPEG, 128 px crops:")
    for q, (between, loss) in jpeg_deviation(crops).items():
        print(f"   quality {q:2d}: PSNR between them {between:.1f} dB (JPEG itself: {loss:.1f} dB from the input)")
    small, big, table = patch_deviation(60, 64)
    print("4. degrading the 64 px crop vs the 400 px patch around it (same parameters), 60 draws:")
    print(f"   mean measured noise std {small:.2f} (crop) vs {big:.2f} (patch)")
    print(table)


if __name__ == "__main__":
    main()
