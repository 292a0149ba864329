"""Turn input photos into GT crops: validate, de-duplicate, split by hash, resize, sharpen, crop.

Everything is a function of the photo bytes and the params: the same photos give the same
crops on any machine, and a new photo never moves an old one to the other split.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realsr_r1.config import PrepareParams
from realsr_r1.data.images import PhotoError, decode_photo, pixel_hash
from realsr_r1.degrade import ops


@dataclass(frozen=True)
class GtCrop:
    """One GT crop and where it came from; `key` is unique and sorts stably."""

    key: str
    split: str
    image: np.ndarray  # uint8 HxWx3 RGB
    meta: dict


@dataclass
class PrepareReport:
    """What `prepare_photos` accepted and rejected, and why; written as the stage's report."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": self.rejected, "crops": self.splits}


def split_of(digest: str, val_fraction: float) -> str:
    """Deterministic train/val assignment from a content hash."""
    return "val" if int(digest[:8], 16) / 2**32 < val_fraction else "train"


def resize_short_side(rgb: np.ndarray, short_side: int | None) -> np.ndarray:
    """Resize so the shorter side is `short_side` (area interpolation when shrinking)."""
    if short_side is None:
        return rgb
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    if s == 1:
        return rgb
    size = (max(short_side, round(w * s)), max(short_side, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def sharpen(rgb: np.ndarray) -> np.ndarray:
    """Real-ESRGAN's GT unsharp masking on a uint8 image."""
    return ops.to_uint8(ops.usm_sharpen(ops.to_float(rgb)))


def cut_crops(rgb: np.ndarray, p: PrepareParams, seed: int) -> list[tuple[np.ndarray, dict]]:
    """`p.crops_per_image` random GT crops with random horizontal flips (albumentations, seeded)."""
    import albumentations as A  # imports torch: kept out of the synthesis workers' start-up

    transform = A.Compose(
        [A.RandomCrop(p.gt_size, p.gt_size), A.HorizontalFlip(p=p.hflip_prob)], seed=seed, save_applied_params=True
    )
    crops = []
    for _ in range(p.crops_per_image):
        out = transform(image=rgb)
        applied = dict(out["applied_transforms"])
        x0, y0, _, _ = applied["RandomCrop"]["crop_coords"]
        crops.append((out["image"], {"y": int(y0), "x": int(x0), "hflip": "HorizontalFlip" in applied}))
    return crops


@dataclass(frozen=True)
class PhotoResult:
    """One photo's outcome: its pixel hash (None if it did not decode), a rejection, or its crops."""

    name: str
    digest: str | None
    error: str | None
    crops: list[tuple[np.ndarray, dict]]


def prepare_photo(name: str, data: bytes, p: PrepareParams, seed: int) -> PhotoResult:
    """Decode, validate, resize, sharpen and crop one photo (everything but the duplicate check)."""
    try:
        rgb = decode_photo(data, name, p.max_pixels, p.min_size)
    except PhotoError as err:
        return PhotoResult(name, None, str(err), [])
    digest = pixel_hash(rgb)
    rgb = resize_short_side(rgb, p.short_side)
    if min(rgb.shape[:2]) < p.gt_size:
        return PhotoResult(name, digest, f"{rgb.shape[1]}x{rgb.shape[0]} is smaller than gt_size={p.gt_size}", [])
    if p.usm_sharpen:
        rgb = sharpen(rgb)
    photo_seed = (seed * 1_000_003 + int(digest[:12], 16)) % 2**32
    return PhotoResult(name, digest, None, cut_crops(rgb, p, photo_seed))


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use."""
    return workers or len(os.sched_getaffinity(0))


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _results(photos: Iterable[tuple[str, bytes]], p: PrepareParams, seed: int, workers: int) -> Iterator[PhotoResult]:
    """`prepare_photo` of each photo in order, on `workers` processes with a bounded window of
    photos in flight (so memory stays flat however many photos the folder holds)."""
    if workers <= 1:
        _init_worker()
        for name, data in photos:
            yield prepare_photo(name, data, p, seed)
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        window: deque = deque()
        for name, data in photos:
            window.append(pool.submit(prepare_photo, name, data, p, seed))
            if len(window) >= 4 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def prepare_photos(
    photos: Iterable[tuple[str, bytes]], p: PrepareParams, seed: int, report: PrepareReport, workers: int = 1
) -> Iterator[GtCrop]:
    """Validate and crop `(name, bytes)` photos, yielding their GT crops in photo order.

    Streams, so memory stays flat for any number of photos; `workers` > 1 processes photos in
    parallel with identical results. A photo is rejected (its reason is appended to
    `report.rejected`) when it does not decode, is smaller than `min_size` or than the GT crop,
    exceeds `max_pixels`, or duplicates an earlier photo. The split of a photo is a function of
    its pixels alone, so adding photos never moves an old one across splits.
    """
    seen: dict[str, str] = {}
    for result in tqdm(_results(photos, p, seed, workers), desc="prepare", unit="photo", mininterval=1):
        name, digest = result.name, result.digest
        error = result.error
        if digest is not None:
            if digest in seen:
                error = f"duplicate of {seen[digest]}"
            else:
                seen[digest] = name
        if error:
            report.rejected.append({"file": name, "reason": error})
            continue
        report.accepted.append(name)
        split = split_of(digest, p.val_fraction)
        for index, (crop, box) in enumerate(result.crops):
            key = f"{digest[:16]}_c{index:03d}"
            meta = {"source": name, "source_sha256": digest, "crop_index": index, "gt_size": p.gt_size, **box}
            report.splits[split] += 1
            yield GtCrop(key, split, np.ascontiguousarray(crop), meta)


def iter_folder(folder: str | Path, extensions: list[str]) -> Iterator[tuple[str, bytes]]:
    """`(relative name, bytes)` of every file with one of `extensions` under `folder`, sorted by name."""
    folder = Path(folder)
    wanted = {e.lower() for e in extensions}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in wanted:
            yield path.relative_to(folder).as_posix(), path.read_bytes()
