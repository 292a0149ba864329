"""How the model does on photos it never saw: degrade them as the pipeline does, upscale, compare.

Each photo is brought to `evaluate.unseen_short_side` (near the training scale, and whole
enough for no-reference metrics), cut to a multiple of the scale, degraded
`evaluate.unseen_draws` times with the pipeline's degradation (each draw seeded, so every run
and every model sees the same LR), upscaled by the policy tile by tile and by bicubic, and both
are compared with the photo on Y. One draw per photo is too few: a draw's degradation moves
a method's gain over bicubic by more than the gain itself. The default photos (`UNSEEN_PHOTOS`)
are kept out of the bundled source; the evaluate stage scores them as its `unseen` benchmark
(`unseen_benchmark`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from realsr_r1.config import Params
from realsr_r1.data.images import read_photo
from realsr_r1.data.prepare import resize_short_side
from realsr_r1.data.synthesis import degrade_sample
from realsr_r1.evaluate.benchmark import Benchmark, Pair, bicubic_upscale
from realsr_r1.policy.interface import Policy, Sampling
from realsr_r1.policy.upscale import upscale
from realsr_r1.quality import border, psnr_ssim_y

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnseenScore:
    photo: str
    size: str  # GT width x height after the resize
    degradation: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float

    def as_dict(self) -> dict:
        return asdict(self)


def degraded_pair(photo: np.ndarray, params: Params, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(GT, LR, degradation text): the photo at the training scale and its seeded degradation."""
    scale = params.synthesize.scale
    gt = resize_short_side(photo, params.evaluate.unseen_short_side)
    h, w = gt.shape[0] // scale * scale, gt.shape[1] // scale * scale
    gt = np.ascontiguousarray(gt[:h, :w])
    lr, record = degrade_sample(gt, params.synthesize.degradation, scale, np.random.default_rng(seed))
    return gt, lr, record["text"]


def degraded_pairs(photos: dict[str, Path], params: Params, seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, str]]:
    """(name, GT, LR, degradation text) of each draw: draw k of photo i (name order) is seeded
    seed + i + k * len(photos), so the first draws keep their seeds when `unseen_draws` grows;
    with several draws the name gets `#k` before its suffix."""
    draws = params.evaluate.unseen_draws
    for i, (name, path) in enumerate(sorted(photos.items())):
        photo = read_photo(path)
        for k in range(draws):
            gt, lr, text = degraded_pair(photo, params, seed + i + k * len(photos))
            stem, suffix = Path(name).stem, Path(name).suffix
            yield (name if draws == 1 else f"{stem}#{k}{suffix}"), gt, lr, text


def unseen_benchmark(photos: dict[str, Path], params: Params, seed: int = 0) -> Benchmark:
    """The draws `score_photos` scores, as a paired benchmark keyed by file stem (and draw)."""
    pairs = [Pair(Path(name).stem, lr, gt) for name, gt, lr, _ in degraded_pairs(photos, params, seed)]
    return Benchmark(Path("unseen"), True, pairs)


def score_photos(
    policy: Policy, photos: dict[str, Path], params: Params, sampling: Sampling, seed: int = 0
) -> list[UnseenScore]:
    """Degrade each photo (`degraded_pairs`), upscale it with `policy` and bicubic, score both on Y."""
    scores = []
    for name, gt, lr, text in degraded_pairs(photos, params, seed):
        with torch.no_grad():
            out = upscale(policy, lr, sampling, seed=seed).images["final_image"]
        base = bicubic_upscale(lr, gt.shape[:2])
        pixels = border(gt.shape[1], lr.shape[1])
        ours, theirs = (tuple(float(v[0]) for v in psnr_ssim_y([image], [gt], pixels)) for image in (out, base))
        score = UnseenScore(name, f"{gt.shape[1]}x{gt.shape[0]}", text, *ours, *theirs)
        log.info("%s: %.2f dB (bicubic %.2f dB)", name, score.psnr, score.bicubic_psnr)
        scores.append(score)
    return scores


def folder_photos(folder: str | Path, extensions: list[str]) -> dict[str, Path]:
    """The photos of a folder (not recursive), by file name; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    wanted = {e.lower() for e in extensions}
    photos = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in wanted}
    if not photos:
        raise FileNotFoundError(f"{folder}: no photos ({', '.join(extensions)})")
    return photos
