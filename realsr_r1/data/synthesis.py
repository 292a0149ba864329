"""Synthesize LR/HR training samples from GT crops, in parallel, into WebDataset shards.

Each sample's randomness comes from (seed, crop key, k) alone, and the shards are written by
one process in key order, so the bytes are identical for any number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realsr_r1.config import DegradationParams
from realsr_r1.data.images import encode_png
from realsr_r1.data.prepare import GtCrop
from realsr_r1.data.shards import write_shards
from realsr_r1.degrade import apply_degradation, describe, draw_degradation, to_text

log = logging.getLogger(__name__)


def sample_rng(seed: int, key: str, k: int) -> np.random.Generator:
    """The generator of sample k of a GT crop: independent of order, process and worker count."""
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:16], 16), k])


def downscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """GT at 1/factor size (area interpolation), for the rough and middle images of the chain."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def degrade_sample(gt: np.ndarray, p: DegradationParams, scale: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One LR of a GT and its full record: the draw, measured noise, operations and their text."""
    draw = draw_degradation(rng, p, gt.shape[:2], scale)
    lr, measured = apply_degradation(gt, draw)
    items = describe(draw, measured)
    record = {**draw, "measured": measured, "operations": [list(i) for i in items], "text": to_text(items)}
    return lr, record


def synthesize_crop(crop: GtCrop, per_image: int, p: DegradationParams, scale: int, seed: int) -> list[dict]:
    """The `per_image` encoded shard samples of one GT crop."""
    hr_png = {"hr.png": encode_png(crop.image), "hr_2.png": encode_png(downscale(crop.image, 2))}
    hr_png["hr_4.png"] = encode_png(downscale(crop.image, 4))
    samples = []
    for k in range(per_image):
        lr, record = degrade_sample(crop.image, p, scale, sample_rng(seed, crop.key, k))
        meta = {**crop.meta, "split": crop.split, "degradation_index": k, "gt_key": crop.key}
        samples.append(
            {
                "__key__": f"{crop.key}_k{k:02d}",
                "lr.png": encode_png(lr),
                **hr_png,
                "degradation.json": json.dumps(record, sort_keys=True).encode(),
                "meta.json": json.dumps(meta, sort_keys=True).encode(),
            }
        )
    return samples


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _job(args: tuple) -> list[dict]:
    return synthesize_crop(*args)


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    return workers or len(os.sched_getaffinity(0))


def synthesize_samples(
    crops: Iterable[GtCrop], per_image: int, p: DegradationParams, scale: int, seed: int, workers: int, total: int | None = None
) -> Iterator[dict]:
    """Encoded samples of every crop, in crop order, computed on `workers` processes."""
    jobs = ((crop, per_image, p, scale, seed) for crop in crops)
    bar = tqdm(total=None if total is None else total * per_image, unit="pair", desc="synthesize", mininterval=1)
    with bar:
        if workers <= 1 or total == 0:
            _init_worker()
            results: Iterable[list[dict]] = map(_job, jobs)
            for samples in results:
                bar.update(len(samples))
                yield from samples
            return
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for samples in pool.imap(_job, jobs, chunksize=4):
                bar.update(len(samples))
                yield from samples


def synthesize_split(
    crops: Iterable[GtCrop], count: int, out_dir: str | Path, per_image: int, p: DegradationParams, scale: int,
    seed: int, workers: int, shard_size: int,
) -> dict:
    """Write the shards of one split from `count` crops given in key order.

    Returns summary statistics: the sample count and how often each graded operation occurs.
    """
    operations: Counter[str] = Counter()

    def tally(samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            operations.update(f"{sev} {op}" if sev else op for op, sev in json.loads(sample["degradation.json"])["operations"])
            yield sample

    samples = synthesize_samples(crops, per_image, p, scale, seed, resolve_workers(workers), total=count)
    n = write_shards(tally(samples), out_dir, shard_size)
    return {"samples": n, "operations": dict(sorted(operations.items()))}
