"""The text the BPE is trained on: annotation texts, the prompt, the degradation vocabulary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from realsr_r1.annotate.records import AnnotationRecord, read_records
from realsr_r1.degrade.describe import GRADED_OPERATIONS, RESIZE_OPERATIONS, SEVERITIES
from realsr_r1.vlcot import PROMPT


def vocabulary_phrases() -> list[str]:
    """Every (severity, operation) item of the degradation text, so none splits into bytes."""
    graded = [f"{sev} {op}" for op in GRADED_OPERATIONS for sev in SEVERITIES]
    return [", ".join(graded + list(RESIZE_OPERATIONS))]


def record_texts(records: Iterable[AnnotationRecord]) -> Iterator[str]:
    for r in records:
        yield from (r.degradation, r.rough_understand, r.middle_understand, r.final_understand)


def text_corpus(annotation_files: Iterable[Path], degradation_texts: Iterable[str]) -> list[str]:
    """All training texts: annotations that exist, the shards' degradation texts, prompt, vocabulary."""
    texts: list[str] = [PROMPT, *vocabulary_phrases(), *degradation_texts]
    for path in annotation_files:
        texts.extend(record_texts(read_records(path)))
    return texts


def block_texts(annotation_files: Iterable[Path], degradation_texts: Iterable[str]) -> list[str]:
    """Every text block the chains hold (annotation texts and degradation texts): what a text
    tokenizer measures its longest block on, for the rollout's text cap."""
    return [text for path in annotation_files for text in record_texts(read_records(path))] + list(degradation_texts)
