"""Synthesize LR/HR training samples from GT crops, in parallel, into WebDataset shards.

Each sample's randomness comes from (seed, crop key, k) alone, and the shards are written by
one process in key order, so the bytes are identical for any number of workers and for either
executor: local processes, or the workers of a Dask cluster (`dask_address`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realsr_r1.chunks import chunked
from realsr_r1.config import DegradationParams
from realsr_r1.data.images import encode_png
from realsr_r1.data.prepare import GtCrop, resolve_workers
from realsr_r1.data.shards import write_shards
from realsr_r1.degrade import apply_degradation, describe, draw_degradation, to_text
from realsr_r1.errors import first_line

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


def _dask_job(crops: list[GtCrop], per_image: int, p: DegradationParams, scale: int, seed: int) -> list[list[dict]]:
    """A chunk of crops on one Dask worker thread (one OpenCV thread each, as in the local pool)."""
    _init_worker()
    return [synthesize_crop(crop, per_image, p, scale, seed) for crop in crops]


class DaskClusterError(RuntimeError):
    """The Dask cluster cannot run the synthesis: unreachable, no worker, or workers on other code."""


DASK_CHUNK = 4  # crops per Dask task, as the local pool's chunksize: amortizes the scheduling overhead
DASK_WAIT_WORKERS_S = 60.0  # how long a reachable scheduler may take to get its first worker


def code_fingerprint() -> str:
    """A hash of what decides the sample bytes: this module, the degradation code and the encoders' versions."""
    import PIL

    here = Path(__file__).resolve().parent
    files = [here / "synthesis.py", here / "images.py", *sorted((here.parent / "degrade").glob("*.py"))]
    h = hashlib.sha256(f"{np.__version__} {cv2.__version__} {PIL.__version__}".encode())
    for path in files:
        h.update(path.read_bytes())
    return h.hexdigest()


def _dask_results(
    address: str, crops: Iterable[GtCrop], per_image: int, p: DegradationParams, scale: int, seed: int
) -> Iterator[list[dict]]:
    """`synthesize_crop` of every crop on the Dask cluster at `address`, in crop order.

    A sliding window of chunk futures (twice the cluster's threads) keeps every worker busy while
    holding only that many chunks' samples in memory, whatever the number of crops.
    """
    import distributed  # imported here: local runs do not need a Dask install

    try:
        client = distributed.Client(address, set_as_default=False)
    except (OSError, ValueError, TypeError) as err:  # refused, timed out, or not an address
        raise DaskClusterError(f"cannot reach the Dask scheduler at {address!r}: {first_line(err)}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=DASK_WAIT_WORKERS_S)
        except TimeoutError:
            raise DaskClusterError(
                f"the Dask scheduler at {address!r} has no worker after {DASK_WAIT_WORKERS_S:.0f} s"
            ) from None
        here = code_fingerprint()
        stale = sorted(w for w, fp in client.run(code_fingerprint).items() if fp != here)
        if stale:
            raise DaskClusterError(
                f"Dask worker(s) {', '.join(stale)} at {address!r} run other synthesis code or library "
                "versions than this checkout (their shards would differ): start them from the same checkout and venv"
            )
        threads = sum(client.nthreads().values())
        log.info("synthesizing on the Dask cluster at %s (%d worker threads)", address, threads)
        window: deque[distributed.Future] = deque()
        for chunk in chunked(crops, DASK_CHUNK):
            window.append(client.submit(_dask_job, chunk, per_image, p, scale, seed, pure=False))
            if len(window) >= 2 * max(threads, 1):
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()


def synthesize_samples(
    crops: Iterable[GtCrop], per_image: int, p: DegradationParams, scale: int, seed: int, workers: int,
    total: int | None = None, dask_address: str = "",
) -> Iterator[dict]:
    """Encoded samples of every crop, in crop order, computed on `workers` local processes or,
    when `dask_address` names a scheduler, on that Dask cluster's workers."""
    jobs = ((crop, per_image, p, scale, seed) for crop in crops)
    bar = tqdm(total=None if total is None else total * per_image, unit="pair", desc="synthesize", mininterval=1)
    with bar:
        if dask_address and total != 0:
            for samples in _dask_results(dask_address, crops, per_image, p, scale, seed):
                bar.update(len(samples))
                yield from samples
            return
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
    seed: int, workers: int, shard_size: int, dask_address: str = "",
) -> dict:
    """Write the shards of one split from `count` crops given in key order.

    `dask_address` (a scheduler such as tcp://10.0.0.5:8786) runs the work on that Dask cluster
    instead of `workers` local processes; the shards are byte-identical either way.
    Returns summary statistics: the sample count and how often each graded operation occurs.
    """
    operations: Counter[str] = Counter()

    def tally(samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            operations.update(f"{sev} {op}" if sev else op for op, sev in json.loads(sample["degradation.json"])["operations"])
            yield sample

    samples = synthesize_samples(
        crops, per_image, p, scale, seed, resolve_workers(workers), total=count, dask_address=dask_address
    )
    n = write_shards(tally(samples), out_dir, shard_size)
    return {"samples": n, "operations": dict(sorted(operations.items()))}
