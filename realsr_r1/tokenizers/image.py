"""The image tokenizer interface: an RGB image <-> a grid of discrete codes, at any multiple of f.

Two kinds implement it (`kmeans`: a patch codebook; `vq`: a neural VQ autoencoder). Either
codes the image itself or, with `residual`, the residual of the image over the bicubic
upsampling of the LR (decode = bicubic + residual), which keeps the AR model near bicubic
quality instead of far below it. Both work on the *target* in [-1, 1]: the image mapped from
[0, 1], or the residual. Images are float tensors (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from realsr_r1.degrade import ops
from realsr_r1.tokenizers.base import BaseConfig, Upsampler

CONFIG_FILE = "image_tokenizer.json"


class TokenizerError(ValueError):
    """An image tokenizer that cannot be built, loaded or applied; one line naming the cause."""


@dataclass(frozen=True)
class KMeansConfig:
    batch_size: int = 4096  # mini-batch k-means batch
    max_iter: int = 10  # passes over the patches
    max_patches: int = 200_000  # subsample the fitting set above this
    overlap: int = 0  # px each code's patch reaches into its neighbours (lapped, blended); 0: plain blocks


@dataclass(frozen=True)
class VQConfig:
    pretrained: str | None = None  # a saved `JanusVQVAE` directory; else trained from this config
    base_channels: int = 32
    channel_multiplier: tuple[int, ...] = (1, 2, 2, 4)  # f = 2 ** (len - 1)
    embed_dim: int = 8
    latent_channels: int = 64
    num_res_blocks: int = 1
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-4


@dataclass(frozen=True)
class ImageTokenizerConfig:
    kind: Literal["kmeans", "vq"] = "kmeans"
    factor: int = 8  # downsampling factor f: one code per f x f pixels
    codebook_size: int = 1024
    residual: bool = True  # code the residual over bicubic(LR) instead of the image
    decode: Literal["sample", "expected"] = "sample"  # expected: decode E[target] under the code distribution
    base: BaseConfig = field(default_factory=BaseConfig)  # what a residual is over: bicubic or learned filters
    seed: int = 0
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    vq: VQConfig = field(default_factory=VQConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_dict(raw: dict) -> ImageTokenizerConfig:
        raw = dict(raw)
        km = KMeansConfig(**raw.pop("kmeans", {}))
        base = BaseConfig(**raw.pop("base", {}))
        vq_raw = dict(raw.pop("vq", {}))
        if "channel_multiplier" in vq_raw:
            vq_raw["channel_multiplier"] = tuple(vq_raw["channel_multiplier"])
        return ImageTokenizerConfig(kmeans=km, vq=VQConfig(**vq_raw), base=base, **raw)


# ------------------------------------------------------------------------------ array helpers
def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, H, W, 3) or a list of HxWx3 arrays -> float (N, 3, H, W) in [0, 1]."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0  # a copy: inputs may be read-only


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3), rounded as every 8-bit image here."""
    return ops.to_uint8(images.detach().float().cpu().permute(0, 2, 3, 1).numpy())


def patchify(x: torch.Tensor, f: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/f, W/f, C*f*f) non-overlapping patches in raster order."""
    n, c, h, w = x.shape
    p = x.reshape(n, c, h // f, f, w // f, f).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(n, h // f, w // f, c * f * f)


def unpatchify(p: torch.Tensor, f: int) -> torch.Tensor:
    """Inverse of `patchify`: (N, h, w, C*f*f) -> (N, C, h*f, w*f)."""
    n, h, w, d = p.shape
    c = d // (f * f)
    return p.reshape(n, h, w, c, f, f).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h * f, w * f)


def make_target(images: torch.Tensor, lr: torch.Tensor | None, residual: bool, base: Upsampler | None = None) -> torch.Tensor:
    """What gets coded: the image mapped to [-1, 1], or its residual over the base upsampling of
    the LR (`base`; bicubic when None)."""
    if not residual:
        return images * 2.0 - 1.0
    if lr is None:
        raise TokenizerError("a residual tokenizer needs the LR image to encode or decode")
    return images - (base or Upsampler(BaseConfig()))(lr, tuple(images.shape[-2:]))


# --------------------------------------------------------------------------------- interface
class ImageTokenizer(ABC):
    """Image <-> code grid; the residual handling is shared, the kinds code the target."""

    def __init__(self, config: ImageTokenizerConfig) -> None:
        self.config = config
        self.base = Upsampler(BaseConfig())  # what residual codes add to: the fitted base replaces it

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # -- what a kind implements: target in [-1, 1] <-> codes
    @abstractmethod
    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) target -> (N, H/f, W/f) long codes."""

    @abstractmethod
    def decode_target(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) codes -> (N, 3, h*f, w*f) target."""

    @abstractmethod
    def decode_target_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """(N, h, w, K) code probabilities -> the expected target (N, 3, h*f, w*f)."""

    @abstractmethod
    def save(self, out_dir: Path) -> None:
        """Write the weights (safetensors) and `CONFIG_FILE` into an existing directory."""

    # -- shared
    def check_size(self, h: int, w: int) -> None:
        if h % self.factor or w % self.factor:
            raise TokenizerError(f"image size {w}x{h} is not a multiple of the tokenizer factor {self.factor}")

    def target(self, images: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        return make_target(images, lr, self.config.residual, self.base)

    def from_target(self, target: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of `target`, clamped to [0, 1]."""
        if not self.config.residual:
            return ((target + 1.0) / 2.0).clamp(0, 1)
        if lr is None:
            raise TokenizerError("a residual tokenizer needs the LR image to encode or decode")
        return (self.base(lr, tuple(target.shape[-2:])) + target).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] (+ the LR when residual) -> (N, H/f, W/f) codes."""
        self.check_size(*images.shape[-2:])
        return self.encode_target(self.target(images, lr))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        """(N, h, w) codes (+ the LR when residual) -> (N, 3, h*f, w*f) in [0, 1]."""
        return self.from_target(self.decode_target(codes), lr)

    def reconstruct(self, images: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        """The images through their own codes: the best any model decoding through this tokenizer
        can do (the ceiling the evaluation reports)."""
        return self.decode(self.encode(images, lr), lr)

    @torch.no_grad()
    def decode_expected(self, probs: torch.Tensor, lr: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the expected target under per-position code probabilities (N, h, w, K)."""
        return self.from_target(self.decode_target_expected(probs), lr)
