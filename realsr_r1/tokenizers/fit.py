"""Fit an image tokenizer on the chain's images and measure its reconstruction ceiling.

The chain shows the GT at 1/4, 1/2 and full size; the tokenizer is fitted on all three (as
image or as residual over bicubic(LR)) and judged on val against the bicubic baseline: a
tokenizer's reconstruction is the best the policy can ever draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from realsr_r1.config import Params
from realsr_r1.data.shards import ShardSample
from realsr_r1.tokenizers.image import (
    ImageTokenizer,
    ImageTokenizerConfig,
    TokenizerError,
    bicubic,
    make_target,
    to_tensor,
    to_uint8,
)

SCALES = ("rough", "middle", "final")  # hr_4, hr_2, hr: the chain's three images


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


def image_tokenizer_config(params: Params) -> ImageTokenizerConfig:
    """The `tokenizer.image` params section (and the global seed) as the library's config."""
    return ImageTokenizerConfig.from_dict({**params.tokenizer.image.model_dump(), "seed": params.seed})


def fit_image_tokenizer(config: ImageTokenizerConfig, chain: ChainImages) -> ImageTokenizer:
    """Fit the kind named in `config` on the targets of all three chain images."""
    targets = [make_target(chain.images[s], chain.lr, config.residual) for s in SCALES]
    if config.kind == "kmeans":
        from realsr_r1.tokenizers.kmeans import fit_kmeans

        return fit_kmeans(config, targets)
    from realsr_r1.tokenizers.vq import train_vq

    return train_vq(config, targets)


def _quality(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean PSNR and SSIM over a batch of uint8 RGB images (SSIM window fits small images)."""
    psnr, ssim = [], []
    for p, t in zip(pred, truth, strict=True):
        exact = np.array_equal(p, t)  # PSNR is infinite there; report 100 dB
        psnr.append(100.0 if exact else min(peak_signal_noise_ratio(t, p, data_range=255), 100.0))
        win = min(7, min(t.shape[:2]) // 2 * 2 - 1)
        ssim.append(structural_similarity(t, p, channel_axis=2, data_range=255, win_size=max(win, 3)))
    return float(np.mean(psnr)), float(np.mean(ssim))


def evaluate_reconstruction(tokenizer: ImageTokenizer, chain: ChainImages) -> dict[str, dict[str, float]]:
    """Per chain scale: reconstruction PSNR/SSIM, bicubic baseline PSNR/SSIM, code usage."""
    out: dict[str, dict[str, float]] = {}
    all_codes = []
    for scale in SCALES:
        images = chain.images[scale]
        codes = tokenizer.encode(images, chain.lr)
        all_codes.append(codes.flatten())
        truth = to_uint8(images)
        rec_psnr, rec_ssim = _quality(to_uint8(tokenizer.decode(codes, chain.lr)), truth)
        bic_psnr, bic_ssim = _quality(to_uint8(bicubic(chain.lr, tuple(images.shape[-2:]))), truth)
        out[scale] = {
            "psnr": rec_psnr,
            "ssim": rec_ssim,
            "bicubic_psnr": bic_psnr,
            "bicubic_ssim": bic_ssim,
            "code_usage": _usage(codes.flatten(), tokenizer.codebook_size),
        }
    codes = torch.cat(all_codes)
    counts = torch.bincount(codes, minlength=tokenizer.codebook_size).float()
    p = counts[counts > 0] / counts.sum()
    out["codes"] = {
        "usage": _usage(codes, tokenizer.codebook_size),
        "perplexity": float(torch.exp(-(p * p.log()).sum())),
    }
    return out


def _usage(codes: torch.Tensor, k: int) -> float:
    """Fraction of the codebook that occurs at least once."""
    return float(len(torch.unique(codes)) / k)
