"""Test data for the tokenizer/policy tests: real photo crops, real degradations, real shards.

Until the synthesize stage lands these stand in for data/shards: crops of scikit-image's
bundled photos degraded by `realsr_r1.degrade` and written with `write_shards`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from realsr_r1.config import DegradationParams
from realsr_r1.data.images import encode_png
from realsr_r1.data.shards import write_shards
from realsr_r1.degrade import apply_degradation, describe, draw_degradation, to_text

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "coins")


def gt_crops(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`n` random uint8 RGB crops of real photos (downscaled so a crop holds a scene)."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        scale = 128 / min(img.shape[:2])
        photos.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - size + 1)
        x = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(np.ascontiguousarray(photo[y : y + size, x : x + size]))
    return crops


def encoded_samples(n: int, size: int = 64, scale: int = 4, seed: int = 0) -> list[dict]:
    """Shard samples (the synthesize contract) for `n` degraded crops."""
    rng = np.random.default_rng(seed)
    out = []
    for i, gt in enumerate(gt_crops(n, size, seed)):
        draw = draw_degradation(rng, DegradationParams(), (size, size), scale)
        lr, stds = apply_degradation(gt, draw)
        ops = describe(draw, stds)
        half = cv2.resize(gt, (size // 2, size // 2), interpolation=cv2.INTER_AREA)
        quarter = cv2.resize(gt, (size // 4, size // 4), interpolation=cv2.INTER_AREA)
        out.append(
            {
                "__key__": f"{seed:03d}-{i:06d}",
                "lr.png": encode_png(lr),
                "hr.png": encode_png(gt),
                "hr_2.png": encode_png(half),
                "hr_4.png": encode_png(quarter),
                "degradation.json": json.dumps({"operations": [list(o) for o in ops], "text": to_text(ops)}),
                "meta.json": json.dumps({"source": f"{PHOTOS[i % len(PHOTOS)]}.png"}),
            }
        )
    return out


def write_split(split_dir: Path, n: int, seed: int) -> Path:
    write_shards(encoded_samples(n, seed=seed), split_dir, shard_size=1000)
    return split_dir


# ------------------------------------------------------------------------ tiny model builders
UNDERSTANDING = (
    "a grey cat with green eyes lying on a red blanket",
    "an astronaut in a white suit in front of a flag",
    "a cup of coffee on a wooden table, steam rising",
    "a rocket on the launch pad under a clear blue sky",
)


def annotation_texts() -> list[str]:
    """Texts like the annotate stage writes (degradation + three understanding levels)."""
    from realsr_r1.tokenizers.corpus import text_corpus

    degradations = [json.loads(s["degradation.json"])["text"] for s in encoded_samples(12, seed=5)]
    return text_corpus([], degradations) + list(UNDERSTANDING) * 3


def tiny_chain(n: int = 48, codebook: int = 64, residual: bool = True, seed: int = 0):
    """(ChainImages, fitted k-means tokenizer, text tokenizer) on real crops, in about a second."""
    from realsr_r1.data.images import decode_png
    from realsr_r1.tokenizers.fit import ChainImages, fit_image_tokenizer
    from realsr_r1.tokenizers.image import ImageTokenizerConfig, KMeansConfig, to_tensor
    from realsr_r1.tokenizers.text import train_text_tokenizer

    samples = encoded_samples(n, seed=seed)
    img = lambda field: to_tensor([decode_png(s[field]) for s in samples])
    chain = ChainImages(img("lr.png"), {"rough": img("hr_4.png"), "middle": img("hr_2.png"), "final": img("hr.png")})
    cfg = ImageTokenizerConfig(codebook_size=codebook, residual=residual, seed=seed, kmeans=KMeansConfig(max_iter=5))
    image_tok = fit_image_tokenizer(cfg, chain)
    text_tok = train_text_tokenizer(annotation_texts(), vocab_size=400, min_frequency=1, max_grid=8)
    return chain, image_tok, text_tok


def tiny_policy_config(**changes):
    from realsr_r1.policy.tiny import TinyPolicyConfig

    base = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}
    return TinyPolicyConfig(**{**base, **changes})
