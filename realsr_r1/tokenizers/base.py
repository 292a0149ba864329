"""The base image a residual tokenizer codes against: bicubic, or learned hashed linear filters.

`filters` is RAISR (Romano, Isidoro and Milanfar, 2016) made blockless: every LR pixel is hashed
by the angle, strength and coherence of its local gradient, and the linear filter of its bucket
maps its window x window LR neighbourhood (RGB) to the HR patch around the f x f pixels it covers,
`margin` px wider on each side; neighbouring patches overlap and are blended under a sine bump,
so a change of bucket between two LR pixels leaves no block edge (one prediction per f x f block
would draw the LR grid). One filter bank per upscaling factor f (the chain's 1x, 2x and 4x images). The filters are fitted by ridge least
squares on the train pairs, each bucket shrunk towards the one filter of all buckets. The normal
equations are sums of products of integers (centred uint8 values), which float64 holds exactly,
so the fit does not depend on the order of summation, the thread count or the CPU.

A residual tokenizer then codes only what the base misses, and expected decoding of an uncertain
policy falls back to the base instead of to bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

WEIGHTS_FILE = "base.safetensors"
LUMA = (0.299, 0.587, 0.114)
COHERENCE_EDGES = (0.25, 0.5)  # coherence in [0, 1]: isotropic texture .. one clean edge
# gradient strength in grey levels per pixel: about the thirds of the bundled train LR pixels
# (fixed, so the buckets do not depend on which samples come first)
STRENGTH_EDGES = (9.0, 19.0)


class BaseError(ValueError):
    """A base that cannot be fitted, loaded or applied; one line naming the cause."""


@dataclass(frozen=True)
class BaseConfig:
    kind: Literal["bicubic", "filters"] = "bicubic"
    window: int = 5  # LR neighbourhood side of each filter (odd)
    angles: int = 8  # gradient angle buckets (x 3 strengths x 3 coherences)
    ridge: float = 1.0  # shrinkage of each bucket's filter towards the filter of all buckets (in samples)


def bicubic(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling of (N, 3, h, w) in [0, 1] to `size`, clamped to [0, 1]."""
    if tuple(lr.shape[-2:]) == tuple(size):
        return lr
    return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def _levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the integer levels 0..255 as float64 (exact)."""
    return (x.double() * 255.0).round()


def neighbourhoods(lr: torch.Tensor, window: int) -> torch.Tensor:
    """(N, 3, h, w) in [0, 1] -> (N h w, 3 window^2 + 1): centred integer levels of each LR pixel's
    neighbourhood (edges replicated), and a constant 128 (the bias)."""
    x = F.pad(_levels(lr) - 128.0, (window // 2,) * 4, mode="replicate")
    cols = F.unfold(x, window).transpose(1, 2)
    cols = torch.cat([cols, torch.full((*cols.shape[:2], 1), 128.0, dtype=cols.dtype, device=lr.device)], -1)
    return cols.reshape(-1, cols.shape[-1])


def structure(lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, h, w) -> per LR pixel (flat): angle of the dominant gradient in [-pi/2, pi/2], its
    strength and the coherence in [0, 1], from the structure tensor of the 3x3 luma neighbourhood."""
    y = torch.einsum("nchw,c->nhw", _levels(lr), torch.tensor(LUMA, dtype=torch.float64, device=lr.device))[:, None]
    y = F.pad(y, (1, 1, 1, 1), mode="replicate")
    gx = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]) / 2
    gy = (y[..., 2:, 1:-1] - y[..., :-2, 1:-1]) / 2
    box = lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, 1)
    a, b, c = box(gx * gx), box(gx * gy), box(gy * gy)
    half = (a + c) / 2
    disc = (((a - c) / 2) ** 2 + b * b).sqrt()
    big, small = (half + disc).clamp_min(0).sqrt(), (half - disc).clamp_min(0).sqrt()
    angle = torch.atan2(2 * b, a - c) / 2
    return angle.flatten(), big.flatten(), ((big - small) / (big + small + 1e-9)).flatten()


def gradient_hash(lr: torch.Tensor, angles: int) -> torch.Tensor:
    """(N, 3, h, w) -> (N h w,) bucket of each LR pixel: angle x strength x coherence."""
    angle, strength, coherence = structure(lr)
    a_idx = ((angle + torch.pi / 2) / torch.pi * angles).long().clamp(0, angles - 1)
    s_idx = torch.bucketize(strength, torch.tensor(STRENGTH_EDGES, dtype=torch.float64, device=lr.device))
    c_idx = torch.bucketize(coherence, torch.tensor(COHERENCE_EDGES, dtype=torch.float64, device=lr.device))
    return a_idx * 9 + s_idx * 3 + c_idx


def margin(f: int) -> int:
    """HR pixels each LR pixel's prediction reaches beyond the f x f block it covers."""
    return max(1, f // 2)


def blend_window(f: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (f + 2 margin)^2 sine bump that blends overlapping predictions (normalised by its sum)."""
    side = f + 2 * margin(f)
    bump = torch.sin(torch.pi * (torch.arange(side, dtype=torch.float64, device=device) + 0.5) / side)
    return torch.outer(bump, bump).float()


def _patches(images: torch.Tensor, f: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N H/f W/f, 3 side^2): the HR patch around each LR pixel's f x f block
    (edges replicated), centred integer levels."""
    m = margin(f)
    x = F.pad(_levels(images) - 128.0, (m,) * 4, mode="replicate")
    cols = F.unfold(x, f + 2 * m, stride=f).transpose(1, 2)
    return cols.reshape(-1, cols.shape[-1])


class Upsampler:
    """LR -> base image at an integer factor: bicubic, or the fitted filter bank of that factor."""

    def __init__(self, config: BaseConfig, filters: dict[int, torch.Tensor] | None = None) -> None:
        self.config = config
        self.filters = filters or {}  # factor -> (buckets, features, 3 (f + 2 margin)^2) float32

    def __call__(self, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.config.kind == "bicubic":
            return bicubic(lr, size)
        n, c, h, w = lr.shape
        f = size[0] // h
        if (size[0], size[1]) != (h * f, w * f) or f not in self.filters:
            raise BaseError(f"no filters for {w}x{h} -> {size[1]}x{size[0]} (fitted factors: {sorted(self.filters)})")
        x = neighbourhoods(lr, self.config.window).float()
        bucket = gradient_hash(lr, self.config.angles)
        weights = self.filters[f]
        out = torch.empty(len(x), weights.shape[-1], device=lr.device)
        for b in bucket.unique().tolist():
            rows = bucket == b
            out[rows] = x[rows] @ weights[b]
        m, side = margin(f), f + 2 * margin(f)
        win = blend_window(f, lr.device).flatten().repeat(c)
        cols = (out.reshape(n, h * w, -1) * win).transpose(1, 2)
        padded = (h * f + 2 * m, w * f + 2 * m)
        total = F.fold(cols, padded, side, stride=f)
        norm = F.fold(win[None, :, None].expand(1, -1, h * w), padded, side, stride=f)
        out = (total / norm)[..., m:-m, m:-m]
        return ((out + 128.0) / 255.0).clamp(0, 1)

    def save(self, out_dir: Path) -> None:
        if self.config.kind == "filters":
            tensors = {f"factor_{f}": w.contiguous() for f, w in self.filters.items()}
            save_file(tensors, str(out_dir / WEIGHTS_FILE))

    @staticmethod
    def load(path: Path, config: BaseConfig) -> Upsampler:
        if config.kind == "bicubic":
            return Upsampler(config)
        if not (path / WEIGHTS_FILE).is_file():
            raise BaseError(f"{path}: missing {WEIGHTS_FILE} (the tokenizer's learned base)")
        tensors = load_file(str(path / WEIGHTS_FILE))
        return Upsampler(config, {int(k.removeprefix("factor_")): v for k, v in tensors.items()})


class FilterFit:
    """Normal equations per (factor, bucket), accumulated batch by batch, then solved once."""

    def __init__(self, config: BaseConfig) -> None:
        if config.window % 2 == 0:
            raise BaseError(f"tokenizer.image.base.window must be odd, got {config.window}")
        self.config = config
        self.xtx: dict[int, torch.Tensor] = {}
        self.xty: dict[int, torch.Tensor] = {}

    def add(self, lr: torch.Tensor, images: torch.Tensor) -> None:
        """One batch of LR inputs and their images at one factor (N, 3, f h, f w) in [0, 1]."""
        f = images.shape[-2] // lr.shape[-2]
        x = neighbourhoods(lr, self.config.window)
        bucket = gradient_hash(lr, self.config.angles)
        y = _patches(images, f)
        buckets = self.config.angles * 9
        if f not in self.xtx:
            self.xtx[f] = torch.zeros(buckets, x.shape[1], x.shape[1], dtype=torch.float64)
            self.xty[f] = torch.zeros(buckets, x.shape[1], y.shape[1], dtype=torch.float64)
        for b in bucket.unique().tolist():
            rows = bucket == b
            self.xtx[f][b] += x[rows].T @ x[rows]
            self.xty[f][b] += x[rows].T @ y[rows]

    def solve(self) -> Upsampler:
        if not self.xtx:
            raise BaseError("no samples to fit the tokenizer's base filters on")
        filters = {}
        for f, xtx in self.xtx.items():
            d = xtx.shape[-1]
            lam = self.config.ridge * 128.0**2 * torch.eye(d, dtype=torch.float64)
            shared = torch.linalg.solve(xtx.sum(0) + lam, self.xty[f].sum(0))
            filters[f] = torch.linalg.solve(xtx + lam, self.xty[f] + lam @ shared).float()
        return Upsampler(self.config, filters)
