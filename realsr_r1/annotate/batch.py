"""Annotate shard samples: the degradation text from the shard plus a backend's captions and tags.

Works in chunks (the backend batches within a chunk), keeps going past failures and counts
every sample as annotated (captioned in this run), cached (captions from an earlier run) or
failed (listed with the reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tqdm import tqdm

from realsr_r1.annotate.captions import Outcome
from realsr_r1.annotate.records import AnnotationRecord
from realsr_r1.chunks import chunked
from realsr_r1.config import AnnotateParams
from realsr_r1.data.shards import ShardSample
from realsr_r1.degrade.describe import to_text

STATUSES = ("annotated", "cached", "failed")


class Backend(Protocol):
    name: str

    def caption(self, samples: Sequence[ShardSample]) -> list[Outcome]: ...


@dataclass
class AnnotateResult:
    """The records of one split and what happened to each sample."""

    records: list[AnnotationRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    failures: list[dict[str, str]] = field(default_factory=list)  # {key, source, error}


def degradation_text(sample: ShardSample) -> str:
    """The sample's ordered (operation, severity) list as text (recorded by synthesis)."""
    deg = sample.degradation
    if "text" in deg:
        return deg["text"]
    return to_text([(op, sev) for op, sev in deg["operations"]])


def annotate_samples(
    samples: Iterable[ShardSample], backend: Backend, chunk_size: int = 64, desc: str = "annotate"
) -> AnnotateResult:
    """Annotation records for every sample the backend can caption; the rest are counted as failed."""
    result = AnnotateResult()
    bar = tqdm(desc=desc, unit="sample", leave=False)
    for chunk in chunked(samples, chunk_size):
        for sample, outcome in zip(chunk, backend.caption(chunk), strict=True):
            result.counts[outcome.status] += 1
            source = str(sample.meta.get("source", ""))
            if outcome.captions is None:
                result.failures.append(
                    {"key": sample.key, "source": source, "error": outcome.error or "unknown"}
                )
                continue
            c = outcome.captions
            result.records.append(
                AnnotationRecord(
                    key=sample.key,
                    source=source,
                    degradation=degradation_text(sample),
                    rough_understand=c.rough_understand,
                    middle_understand=c.middle_understand,
                    final_understand=c.final_understand,
                    tags=list(c.tags),
                )
            )
        bar.update(len(chunk))
    bar.close()
    return result


def make_backend(cfg: AnnotateParams) -> Backend:
    """The backend chosen in params (the `vlm` one imports transformers only when chosen)."""
    if cfg.backend == "sidecar":
        from realsr_r1.annotate.sidecar import SidecarBackend

        return SidecarBackend(cfg.sidecar)
    from realsr_r1.annotate.vlm import VlmBackend

    return VlmBackend(cfg.vlm)
