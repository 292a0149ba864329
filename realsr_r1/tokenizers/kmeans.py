"""The `kmeans` image tokenizer: a codebook of f x f RGB patches fitted by mini-batch k-means.

Measured on 64x64 crops of real photos it fits in about half a minute on 2 cores and
reconstructs better than a neural VQ trained for minutes, which is why it is the tiny default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.cluster import MiniBatchKMeans

from realsr_r1.tokenizers.image import (
    ImageTokenizer,
    ImageTokenizerConfig,
    TokenizerError,
    patchify,
    unpatchify,
)

log = logging.getLogger(__name__)
WEIGHTS_FILE = "codebook.safetensors"


class KMeansTokenizer(ImageTokenizer):
    """Codes each f x f patch of the target by its nearest codebook patch (squared error)."""

    def __init__(self, config: ImageTokenizerConfig, codebook: torch.Tensor) -> None:
        super().__init__(config)
        expected = (config.codebook_size, 3 * config.factor**2)
        if tuple(codebook.shape) != expected:
            raise TokenizerError(f"codebook has shape {tuple(codebook.shape)}, config says {expected}")
        self.codebook = codebook.float().contiguous()
        self._sq_norms = (self.codebook**2).sum(1)

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        patches = patchify(target, self.factor)
        n, h, w, d = patches.shape
        flat = patches.reshape(-1, d)
        codes = torch.empty(flat.shape[0], dtype=torch.long)
        for start in range(0, flat.shape[0], 8192):  # bounded memory for big images
            chunk = flat[start : start + 8192]
            dist = self._sq_norms[None] - 2.0 * chunk @ self.codebook.T
            codes[start : start + 8192] = dist.argmin(1)
        return codes.reshape(n, h, w)

    def decode_target(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise TokenizerError(f"codes outside [0, {self.codebook_size})")
        return unpatchify(self.codebook[codes], self.factor)

    def decode_target_expected(self, probs: torch.Tensor) -> torch.Tensor:
        return unpatchify(probs.float() @ self.codebook, self.factor)

    def save(self, out_dir: Path) -> None:
        save_file({"codebook": self.codebook}, str(out_dir / WEIGHTS_FILE))

    @staticmethod
    def load(path: Path, config: ImageTokenizerConfig) -> KMeansTokenizer:
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise TokenizerError(f"{path}: missing {WEIGHTS_FILE}")
        return KMeansTokenizer(config, load_file(str(weights))["codebook"])


def select_patches(config: ImageTokenizerConfig, counts: list[int], batches: Iterable[list[torch.Tensor]]) -> np.ndarray:
    """The fitting set: a seeded subsample of `max_patches` of all the targets' f x f patches.

    Target `t` has `counts[t]` patches in all; `batches` yields the targets in pieces (a list with
    one slice of each target per batch, in order), so only the chosen patches are ever held: the
    result equals subsampling the concatenation of every patch, without building it.
    """
    f = config.factor
    offsets = np.cumsum([0, *counts])
    total = int(offsets[-1])
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(total, config.kmeans.max_patches, replace=False) if total > config.kmeans.max_patches else np.arange(total)
    order = np.argsort(chosen, kind="stable")
    wanted = chosen[order]
    out = np.empty((len(chosen), 3 * f * f), np.float32)
    done = [0] * len(counts)
    for batch in batches:
        for t, target in enumerate(batch):
            flat = patchify(target, f).reshape(-1, 3 * f * f)
            lo = int(offsets[t]) + done[t]
            a, b = np.searchsorted(wanted, [lo, lo + len(flat)])
            out[order[a:b]] = flat[torch.from_numpy(wanted[a:b] - lo)].numpy()
            done[t] += len(flat)
    if done != list(counts):
        raise TokenizerError(f"the targets held {done} patches, expected {list(counts)}")
    return out


def fit_kmeans(config: ImageTokenizerConfig, targets: list[torch.Tensor]) -> KMeansTokenizer:
    """Fit the codebook on the f x f patches of `targets` (each (N, 3, H, W) in [-1, 1])."""
    f = config.factor
    counts = [len(t) * (t.shape[-2] // f) * (t.shape[-1] // f) for t in targets]
    return fit_codebook(config, select_patches(config, counts, [targets]))


def fit_codebook(config: ImageTokenizerConfig, patches: np.ndarray) -> KMeansTokenizer:
    """Mini-batch k-means of the (P, 3 f f) fitting patches into the codebook."""
    if len(patches) < config.codebook_size:
        raise TokenizerError(
            f"{len(patches)} training patches for {config.codebook_size} codes: need at least one patch per code"
        )
    log.info("k-means: %d patches of %d values -> %d codes", len(patches), patches.shape[1], config.codebook_size)
    km = MiniBatchKMeans(
        n_clusters=config.codebook_size,
        batch_size=config.kmeans.batch_size,
        max_iter=config.kmeans.max_iter,
        n_init=1,
        random_state=config.seed,
        reassignment_ratio=0.01,
    )
    km.fit(patches)
    return KMeansTokenizer(config, torch.from_numpy(km.cluster_centers_.astype(np.float32)))
