"""Run the chain on a photo of any size: overlapping LR tiles, batched rollouts, feathered blend.

Each tile is one LR prompt of the model's size; its rough, middle and final images land at
1/4, 1/2 and full output scale and are blended with weights that ramp linearly across the
overlap, so neighbouring tiles fade into each other without seams. A photo smaller than one
tile is padded by reflection and the output cropped back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from realsr_r1.policy.interface import Policy, Sampling
from realsr_r1.vlcot import IMAGE_BLOCK_DOWNSCALE, IMAGE_BLOCKS, VLCoT


@dataclass(frozen=True)
class Upscaled:
    """The blended images (rough, middle, final) and the chain of the centre tile."""

    images: dict[str, np.ndarray]  # block -> uint8 RGB at scale / downscale of the input
    chain: VLCoT | None
    tiles: int
    capped: int  # tiles whose text block was closed by force at max_text_tokens (images still made)
    unfinished: int  # tiles cut by max_new_tokens before their final image (bicubic stands in)
    seconds_per_tile: float  # measured on the first batch


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering [0, length): stride tile - overlap, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def feather(size: int, ramp: int) -> np.ndarray:
    """1-D blend weights: a linear ramp of `ramp` pixels at both ends, never exactly zero."""
    x = np.arange(size, dtype=np.float64) + 0.5
    w = np.minimum(1.0, np.minimum(x, size - x) / max(ramp, 1))
    return np.clip(w, 1e-3, 1.0)


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles `upscale` cuts a photo into (to say up front how long it will take)."""
    return len(tile_origins(max(height, tile), tile, overlap)) * len(tile_origins(max(width, tile), tile, overlap))


def upscale(
    policy: Policy,
    photo: np.ndarray,
    sampling: Sampling,
    seed: int = 0,
    overlap: int = 4,
    batch_size: int = 32,
    on_estimate: Callable[[float, float, int], None] | None = None,
) -> Upscaled:
    """Upscale a uint8 RGB photo by the policy's scale with the full chain per tile.

    After the first batch, `on_estimate(total_seconds, seconds_per_tile, tiles_measured)` gets
    the whole run's expected time (tiles x the measured seconds per tile)."""
    tile, scale = policy.lr_size, policy.scale
    h, w = photo.shape[:2]
    ph, pw = max(h, tile), max(w, tile)
    padded = np.pad(photo, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    boxes = [(y, x) for y in tile_origins(ph, tile, overlap) for x in tile_origins(pw, tile, overlap)]
    factors = {b: scale // IMAGE_BLOCK_DOWNSCALE[b] for b in IMAGE_BLOCKS}  # output px per input px
    acc = {b: np.zeros((ph * f, pw * f, 3)) for b, f in factors.items()}
    wsum = {b: np.zeros((ph * f, pw * f, 1)) for b, f in factors.items()}
    centre = len(boxes) // 2
    chain, truncated, unfinished, per_tile = None, 0, 0, 0.0
    bar = tqdm(total=len(boxes), desc="tiles", unit="tile", disable=len(boxes) <= batch_size)
    for start in range(0, len(boxes), batch_size):
        part = boxes[start : start + batch_size]
        began = time.perf_counter()
        prompts = policy.prompts([padded[y : y + tile, x : x + tile] for y, x in part])
        rollout = policy.rollout(prompts, 1, sampling, seed=seed + start)
        truncated += int(rollout.truncated.sum())
        unfinished += sum(len(c.images) < len(IMAGE_BLOCKS) for c in rollout.completions)
        if start == 0:
            per_tile = (time.perf_counter() - began) / len(part)
            if on_estimate is not None:
                on_estimate(per_tile * len(boxes), per_tile, len(part))
        bar.update(len(part))
        for i, (y, x) in enumerate(part):
            images = dict(zip(IMAGE_BLOCKS, rollout.completions[i].images))
            if start + i == centre:
                chain = rollout.chains[i]
            for block, f in factors.items():
                size = tile * f
                img = images.get(block)
                if img is None:  # unfinished sample: fall back to bicubic for this tile
                    img = cv2.resize(padded[y : y + tile, x : x + tile], (size, size), interpolation=cv2.INTER_CUBIC)
                win = np.outer(feather(size, overlap * f), feather(size, overlap * f))[..., None]
                acc[block][y * f : y * f + size, x * f : x * f + size] += img.astype(np.float64) * win
                wsum[block][y * f : y * f + size, x * f : x * f + size] += win
    bar.close()
    out = {
        b: np.clip(np.rint(acc[b] / wsum[b]), 0, 255).astype(np.uint8)[: h * f, : w * f] for b, f in factors.items()
    }
    return Upscaled(out, chain, len(boxes), capped=truncated - unfinished, unfinished=unfinished, seconds_per_tile=per_tile)
