"""Test data for the tokenizer/policy tests: real photo crops, real degradations, real shards.

Small stand-ins for data/shards: crops of scikit-image's bundled photos degraded by the
synthesize stage's own `synthesize_crop` and written with `write_shards`. The tiny chain
(tokenizers fitted on them) is built once per session by the fixtures in conftest.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from realsr_r1.config import DegradationParams
from realsr_r1.data.prepare import GtCrop
from realsr_r1.data.shards import write_shards
from realsr_r1.data.synthesis import synthesize_crop

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
    """Shard samples of `n` degraded crops, made by the synthesize stage's own `synthesize_crop`."""
    crops = [
        GtCrop(f"{seed:03d}-{i:06d}", "train", gt, {"source": f"{PHOTOS[i % len(PHOTOS)]}.png"})
        for i, gt in enumerate(gt_crops(n, size, seed))
    ]
    return [sample for crop in crops for sample in synthesize_crop(crop, 1, DegradationParams(), scale, seed)]


def write_split(split_dir: Path, n: int, seed: int, shard_size: int = 1000) -> Path:
    write_shards(encoded_samples(n, seed=seed), split_dir, shard_size=shard_size)
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


@functools.cache
def tiny_text_tokenizer():
    """The BPE text tokenizer with the layout tokens, trained once per process (it is not mutated)."""
    from realsr_r1.tokenizers.text import train_text_tokenizer

    return train_text_tokenizer(annotation_texts(), vocab_size=400, min_frequency=1, max_grid=8)


def tiny_chain(n: int = 48, codebook: int = 64, residual: bool = True, seed: int = 0):
    """(ChainImages, fitted k-means tokenizer, text tokenizer) on real crops, in about a second.

    Tests take it from the session fixtures `tiny_parts`/`tiny_image_parts` (conftest.py)."""
    from realsr_r1.data.shards import decode_sample
    from realsr_r1.tokenizers.fit import fit_image_tokenizer, stack_samples
    from realsr_r1.tokenizers.image import ImageTokenizerConfig, KMeansConfig

    chain = stack_samples(decode_sample(s) for s in encoded_samples(n, seed=seed))
    cfg = ImageTokenizerConfig(codebook_size=codebook, residual=residual, seed=seed, kmeans=KMeansConfig(max_iter=5))
    return chain, fit_image_tokenizer(cfg, chain), tiny_text_tokenizer()


def tiny_policy_config(**changes):
    from realsr_r1.policy.tiny import TinyPolicyConfig

    base = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}
    return TinyPolicyConfig(**{**base, **changes})


def tiny_policy_checkpoint(root, tiny_parts, max_text_tokens: int):
    """A tiny untrained policy saved by `realsr init-policy` under `root` from the shared tokenizers,
    with the params file it was built from: (policy dir, params.yaml path)."""
    import yaml
    from typer.testing import CliRunner

    from realsr_r1.cli import app
    from realsr_r1.tokenizers.factory import save_image_tokenizer
    from tests.conftest import REPO

    _, image_tok, text_tok = tiny_parts
    save_image_tokenizer(image_tok, root / "tokenizer/image")
    text_tok.save_pretrained(root / "tokenizer/text")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["policy"].update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
    params["rollout"].update(max_text_tokens=max_text_tokens)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["init-policy", "--tokenizer", str(root / "tokenizer"), "-o", str(root / "policy"), "--params", str(root / "params.yaml")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "M parameters" in res.output
    return root / "policy", root / "params.yaml"


def ragged(prompts, cut: list[int], pad: int):
    """Row i loses `cut[i]` prompt tokens after bos, so the prompts differ in length: all of them
    left-padded into one batch with a mask, and each alone, unpadded."""
    import torch

    from realsr_r1.policy.interface import PromptBatch

    b, p = prompts.input_ids.shape
    alone = []
    for i, k in enumerate(cut):
        keep = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1 + k, p)])
        alone.append(PromptBatch(prompts.input_ids[i : i + 1, keep], prompts.uncond_ids[i : i + 1, keep], prompts.lr[i : i + 1]))
    length = p - min(cut)
    ids, uncond = torch.full((b, length), pad), torch.full((b, length), pad)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, row in enumerate(alone):
        n = row.input_ids.shape[1]
        ids[i, length - n :], uncond[i, length - n :], mask[i, length - n :] = row.input_ids[0], row.uncond_ids[0], True
    return PromptBatch(ids, uncond, prompts.lr, mask), alone
