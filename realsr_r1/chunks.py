"""Lazy fixed-size chunks of an iterable: batching for backends and for Dask tasks
(`itertools.batched` from Python 3.12, as lists)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), read lazily."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
