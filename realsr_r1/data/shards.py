"""WebDataset shards: the contract between synthesis and every training stage.

`{split}/shard-%06d.tar`, one sample per degraded LR: `lr.png`, `hr.png`, `hr_2.png` (1/2),
`hr_4.png` (1/4), `degradation.json` (the draw, the measured noise, the operations and their
text) and `meta.json` (source photo, crop, indices). Writing is deterministic: fixed tar
metadata (mtime 0, root owner) and samples in key order, so equal inputs give equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from realsr_r1.data.images import decode_png

T = TypeVar("T")

SHARD_PATTERN = "shard-%06d.tar"
IMAGE_FIELDS = ("lr.png", "hr.png", "hr_2.png", "hr_4.png")
JSON_FIELDS = ("degradation.json", "meta.json")


@dataclass(frozen=True)
class ShardSample:
    """One decoded sample: uint8 HxWx3 RGB arrays and the two JSON records."""

    key: str
    lr: np.ndarray
    hr: np.ndarray
    hr_2: np.ndarray
    hr_4: np.ndarray
    degradation: dict[str, Any]
    meta: dict[str, Any]


def write_shards(samples: Iterable[dict[str, bytes | str]], out_dir: str | Path, shard_size: int) -> int:
    """Write encoded samples (dicts with `__key__` and the fields) into numbered tars; returns the count."""
    import webdataset as wds  # imports torch: only where shards are written or read, not in workers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count, writer = 0, None
    try:
        for sample in samples:
            if count % shard_size == 0:
                if writer is not None:
                    writer.close()
                path = out_dir / (SHARD_PATTERN % (count // shard_size))
                writer = wds.TarWriter(str(path), mtime=0, user="root", group="root", mode=0o644)
            writer.write(sample)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    return count


def shard_paths(split_dir: str | Path) -> list[str]:
    """Sorted shard paths of one split directory (empty if the split has no samples)."""
    return sorted(str(p) for p in Path(split_dir).glob("shard-*.tar"))


def decode_sample(sample: dict[str, Any]) -> ShardSample:
    """One encoded sample (as `write_shards` takes and WebDataset yields) decoded; names what is missing."""
    missing = [f for f in IMAGE_FIELDS + JSON_FIELDS if f not in sample]
    if missing:
        raise ValueError(f"sample {sample.get('__key__')!r} in {sample.get('__url__')}: missing {missing}")
    images = {f.removesuffix(".png"): decode_png(sample[f]) for f in IMAGE_FIELDS}
    return ShardSample(
        key=sample["__key__"],
        degradation=json.loads(sample["degradation.json"]),
        meta=json.loads(sample["meta.json"]),
        **images,
    )


def evenly_spaced(items: Sequence[T], n: int) -> list[T]:
    """`n` items at even strides over `items` (all when fewer): a val subset that spans every
    photo of the split, where the first `n` of shard order would be a few crops of one photo."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def read_samples(split_dir: str | Path) -> Iterator[ShardSample]:
    """All samples of a split, decoded, in shard order (no shuffling: for stages and tests)."""
    import webdataset as wds

    urls = shard_paths(split_dir)
    if not urls:
        return iter(())
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return (decode_sample(s) for s in dataset)


def read_records(split_dir: str | Path, field: str = "degradation.json") -> Iterator[dict[str, Any]]:
    """One JSON field of every sample of a split, in shard order, without decoding any image."""
    import tarfile

    for url in shard_paths(split_dir):
        with tarfile.open(url) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith("." + field):
                    yield json.loads(tar.extractfile(member).read())
