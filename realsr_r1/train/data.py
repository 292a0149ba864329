"""Training samples streamed from WebDataset shards (local or S3) and joined with their annotations.

Training shards are split across processes (`split_by_node`) and DataLoader workers
(`split_by_worker`), so no two of them read the same sample in one epoch; the val stream is read
whole by every process. Shard order and the sample shuffle buffer are seeded by (seed, epoch,
rank, worker): an epoch's stream is a pure function of those, which is what lets a resumed run
skip to its data position and see the very batches it would have.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from realsr_r1.annotate.records import AnnotationRecord, read_records
from realsr_r1.data.shards import decode_sample
from realsr_r1.rewards.scoring import Truth
from realsr_r1.vlcot import VLCoT


class DataError(ValueError):
    """Shards or annotations that cannot be trained on; the message names the file or key."""


@dataclass(frozen=True)
class TrainSample:
    """What the loop needs of one sample: the LR, the target chain, and the truth for rewards."""

    key: str
    lr: np.ndarray  # uint8 HxWx3
    chain: VLCoT  # texts + GT at 1/4, 1/2, full size (uint8)
    tags: tuple[str, ...]


def truth(sample: TrainSample, tags: frozenset[str]) -> Truth:
    """What the rewards score `sample`'s completions against; `tags`: the train annotations' tag vocabulary."""
    return Truth.from_text(sample.chain.degradation, sample.tags, sample.chain.final_image, tags)


def shard_urls(root: str, split: str) -> list[str]:
    """Sorted shard URLs of `root/split` (a local folder or s3://bucket/prefix); DataError if none."""
    if root.startswith("s3://"):
        from realsr_r1.data.sources import s3_client

        parsed = urlparse(root.rstrip("/") + f"/{split}/")
        bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".tar")]
        urls = sorted(f"s3://{bucket}/{k}" for k in keys)
    else:
        folder = Path(root) / split
        if not folder.is_dir():
            raise DataError(f"{folder}: shard folder not found (run the synthesize stage, or set sft.shards)")
        urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    if not urls:
        raise DataError(f"{root}/{split}: no shard-*.tar files")
    return urls


def check_readers(urls: list[str], split: str, processes: int, workers: int) -> None:
    """DataError unless each reader (process x DataLoader worker) gets a shard of its own: shards
    are handed out whole, and a process left without any would stall the others' collectives."""
    readers = processes * max(1, workers)
    if len(urls) < readers:
        raise DataError(
            f"sft.shards: {len(urls)} {split} shard(s) for {processes} process(es) x {max(1, workers)} DataLoader "
            f"worker(s), {readers} needed (one per reader): lower synthesize.shard_size, sft.num_processes or sft.workers"
        )


def shard_keys(urls: list[str]) -> list[str]:
    """The sample keys of local shards from the tar member names, without decoding anything."""
    keys: list[str] = []
    for url in urls:
        if url.startswith("s3://"):
            continue  # checked as the samples stream in
        with tarfile.open(url) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar if m.isfile()})
    return keys


def load_annotations(path: str | Path, keys: list[str] | None = None) -> dict[str, AnnotationRecord]:
    """Annotations by sample key; with `keys`, DataError naming the file when one lacks a record."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotations not found (run the annotate stage)")
    records = {r.key: r for r in read_records(path)}
    missing = [k for k in keys or [] if k not in records]
    if missing:
        raise DataError(f"{path}: no annotation for {len(missing)} shard sample(s), e.g. {missing[0]!r}")
    return records


def open_shards(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """{"url"} -> {"url", "stream"}: a local file, or an S3 object streamed by boto3."""
    for item in src:
        url = item["url"]
        if url.startswith("s3://"):
            from realsr_r1.data.sources import s3_client

            parsed = urlparse(url)
            stream = s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        else:
            stream = open(url, "rb")  # noqa: SIM115 (webdataset reads it to the end, then we close it)
        try:
            yield {"url": url, "stream": stream}
        finally:
            stream.close()


def to_train_sample(raw: dict[str, Any], annotations: dict[str, AnnotationRecord]) -> TrainSample:
    s = decode_sample(raw)
    record = annotations.get(s.key)
    if record is None:
        raise DataError(f"{raw.get('__url__')}: sample {s.key!r} has no annotation")
    chain = VLCoT(
        degradation=record.degradation,
        rough_understand=record.rough_understand,
        middle_understand=record.middle_understand,
        final_understand=record.final_understand,
        rough_image=s.hr_4,
        middle_image=s.hr_2,
        final_image=s.hr,
    )
    return TrainSample(s.key, s.lr, chain, tuple(record.tags))


class ShardStream(IterableDataset):
    """One epoch of annotated samples for this process and DataLoader worker (`set_epoch` first);
    `per_rank=False`: every process reads every shard (the val set every rank evaluates alike)."""

    def __init__(
        self, urls: list[str], annotations: dict[str, AnnotationRecord], shuffle_buffer: int, seed: int,
        shuffle: bool = True, per_rank: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.urls, self.annotations = urls, annotations
        self.shuffle_buffer, self.seed, self.shuffle, self.per_rank = shuffle_buffer, seed, shuffle, per_rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[TrainSample]:
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(urls)
        worker = torch.utils.data.get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        stages: list[Any] = [
            wds.SimpleShardList(urls),
            *([wds.split_by_node] if self.per_rank else []),
            wds.split_by_worker,
            open_shards,
            wds.tariterators.tar_file_expander,
            wds.tariterators.group_by_keys,
        ]
        if self.shuffle:
            rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker.id if worker else 0}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), rng=rng))
        for raw in wds.DataPipeline(*stages):
            yield to_train_sample(raw, self.annotations)


def as_list(batch: list[TrainSample]) -> list[TrainSample]:
    """The collate function: a batch stays a list of samples (the policy builds its own tensors)."""
    return batch


def loader(stream: ShardStream, batch_size: int, workers: int, generator: torch.Generator | None = None) -> DataLoader:
    """Batches of one epoch, in a deterministic order for a given number of workers."""
    return DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=as_list, generator=generator)
