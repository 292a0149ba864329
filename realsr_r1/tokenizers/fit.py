"""Fit an image tokenizer on the chain's images and measure its reconstruction ceiling.

The chain shows the GT at 1/4, 1/2 and full size; the tokenizer is fitted on all three (as
image or as residual over bicubic(LR)) and judged on val against the bicubic baseline: a
tokenizer's reconstruction is the best the policy can ever draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from realsr_r1.config import Params
from realsr_r1.data.shards import ShardSample
from realsr_r1.quality import border, psnr_ssim_y
from realsr_r1.tokenizers.base import FilterFit, Upsampler, bicubic
from realsr_r1.tokenizers.image import (
    ImageTokenizer,
    ImageTokenizerConfig,
    TokenizerError,
    make_target,
    to_tensor,
    to_uint8,
)

SCALES = ("rough", "middle", "final")  # hr_4, hr_2, hr: the chain's three images
QUALITY_KEYS = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "base_psnr", "base_ssim")


@dataclass(frozen=True)
class ChainImages:
    """A split's LR inputs and its three GT images per sample, as float tensors in [0, 1]."""

    lr: torch.Tensor
    images: dict[str, torch.Tensor]  # scale name -> (N, 3, H, W)

    def __len__(self) -> int:
        return len(self.lr)


def stack_samples(samples: Iterable[ShardSample]) -> ChainImages:
    """Decode-once stacking of shard samples (all of one GT size) into tensors."""
    samples = list(samples)
    if not samples:
        raise TokenizerError("no samples to fit or evaluate the tokenizer on")
    return ChainImages(
        lr=to_tensor([s.lr for s in samples]),
        images={
            "rough": to_tensor([s.hr_4 for s in samples]),
            "middle": to_tensor([s.hr_2 for s in samples]),
            "final": to_tensor([s.hr for s in samples]),
        },
    )


def chain_batches(samples: Iterable[ShardSample], batch: int) -> Iterator[ChainImages]:
    """Stream shard samples as `ChainImages` of at most `batch` samples: memory for one batch only."""
    it = iter(samples)
    while chunk := list(islice(it, batch)):
        yield stack_samples(chunk)


def image_tokenizer_config(params: Params) -> ImageTokenizerConfig:
    """The `tokenizer.image` params section (and the global seed) as the library's config."""
    return ImageTokenizerConfig.from_dict({**params.tokenizer.image.model_dump(), "seed": params.seed})


def fit_base(config: ImageTokenizerConfig, chains: Iterable[ChainImages]) -> Upsampler:
    """The base residual codes are over: bicubic, or filters fitted on all three chain images."""
    if config.base.kind == "bicubic" or not config.residual:
        return Upsampler(config.base)
    fit = FilterFit(config.base)
    for chain in chains:
        for scale in SCALES:
            fit.add(chain.lr, chain.images[scale])
    return fit.solve()


def fit_image_tokenizer(config: ImageTokenizerConfig, chain: ChainImages) -> ImageTokenizer:
    """Fit the base, then the kind named in `config` on the targets of all three chain images."""
    base = fit_base(config, [chain])
    targets = [make_target(chain.images[s], chain.lr, config.residual, base) for s in SCALES]
    if config.kind == "kmeans":
        from realsr_r1.tokenizers.kmeans import fit_kmeans

        tokenizer: ImageTokenizer = fit_kmeans(config, targets)
    else:
        from realsr_r1.tokenizers.vq import train_vq

        tokenizer = train_vq(config, targets)
    tokenizer.base = base
    return tokenizer


def fit_image_tokenizer_stream(config: ImageTokenizerConfig, chains: Callable[[], Iterable[ChainImages]], count: int) -> ImageTokenizer:
    """Fit on a split streamed in batches (`chains()` starts a pass over its `count` samples).

    The base's normal equations and k-means' subsample of patches (the same one
    `fit_image_tokenizer` draws from the whole split) are all that is kept, so memory does not
    grow with the split; the `vq` kind trains on random batches of the whole split and holds it.
    """
    if config.kind != "kmeans":
        return fit_image_tokenizer(config, concat_chains(list(chains())))
    from realsr_r1.tokenizers.kmeans import fit_codebook, select_patches

    first = next(iter(chains()), None)
    if first is None:
        raise TokenizerError("no samples to fit the tokenizer on")
    base = fit_base(config, chains())
    f = config.factor
    counts = [count * (first.images[s].shape[-2] // f) * (first.images[s].shape[-1] // f) for s in SCALES]
    batches = ([make_target(c.images[s], c.lr, config.residual, base) for s in SCALES] for c in chains())
    tokenizer = fit_codebook(config, select_patches(config, counts, batches))
    tokenizer.base = base
    return tokenizer


def concat_chains(chains: list[ChainImages]) -> ChainImages:
    """One `ChainImages` of several batches, in order."""
    if not chains:
        raise TokenizerError("no samples to fit or evaluate the tokenizer on")
    return ChainImages(
        lr=torch.cat([c.lr for c in chains]),
        images={s: torch.cat([c.images[s] for c in chains]) for s in SCALES},
    )


def evaluate_reconstruction(
    tokenizer: ImageTokenizer, chains: ChainImages | Iterable[ChainImages]
) -> dict[str, dict[str, float]]:
    """Per chain scale: reconstruction PSNR/SSIM-Y, bicubic baseline and base (what residual codes
    add to) PSNR/SSIM-Y (`realsr_r1.quality`,
    the image's upscaling factor over the LR cropped at each edge), code usage.

    `chains`: the split, whole or as a stream of batches (the result is the same).
    """
    if isinstance(chains, ChainImages):
        chains = [chains]
    scores: dict[str, dict[str, list[float]]] = {s: {k: [] for k in QUALITY_KEYS} for s in SCALES}
    counts = {s: torch.zeros(tokenizer.codebook_size, dtype=torch.long) for s in SCALES}
    for chain in chains:
        for scale in SCALES:
            images = chain.images[scale]
            codes = tokenizer.encode(images, chain.lr)
            counts[scale] += torch.bincount(codes.flatten(), minlength=tokenizer.codebook_size)
            truth, pixels = to_uint8(images), border(images.shape[-1], chain.lr.shape[-1])
            rec = psnr_ssim_y(to_uint8(tokenizer.decode(codes, chain.lr)), truth, pixels)
            bic = psnr_ssim_y(to_uint8(bicubic(chain.lr, tuple(images.shape[-2:]))), truth, pixels)
            base = psnr_ssim_y(to_uint8(tokenizer.base(chain.lr, tuple(images.shape[-2:]))), truth, pixels)
            for key, values in zip(QUALITY_KEYS, (*rec, *bic, *base), strict=True):
                scores[scale][key] += values.tolist()
    if not scores[SCALES[0]]["psnr"]:
        raise TokenizerError("no samples to evaluate the tokenizer on")
    out: dict[str, dict[str, float]] = {}
    for scale in SCALES:
        out[scale] = {key: float(np.mean(values)) for key, values in scores[scale].items()}
        out[scale]["code_usage"] = _usage(counts[scale])
    total = sum(counts.values()).float()
    p = total[total > 0] / total.sum()
    out["codes"] = {"usage": _usage(total), "perplexity": float(torch.exp(-(p * p.log()).sum()))}
    return out


def _usage(counts: torch.Tensor) -> float:
    """Fraction of the codebook that occurs at least once, from the count of each code."""
    return float((counts > 0).sum() / len(counts))
