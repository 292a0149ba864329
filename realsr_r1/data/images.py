"""Image IO: decode and validate input photos, encode and decode PNGs.

Decoding goes through Pillow (EXIF orientation, CMYK, 16-bit, palette, alpha) with the size
checked on the header before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class PhotoError(ValueError):
    """An input that cannot be used as a photo; the message says why in a few words."""


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 HxWx3 RGB; alpha is composited on white, 16-bit scaled down."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def decode_photo(data: bytes, name: str = "image", max_pixels: int = 100_000_000, min_size: int = 1) -> np.ndarray:
    """Decode and validate photo bytes into uint8 HxWx3 RGB (EXIF orientation applied).

    Raises `PhotoError` for empty, non-image, truncated, too large or too small input.
    """
    if not data:
        raise PhotoError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise PhotoError(f"{w}x{h} pixels exceeds max_pixels={max_pixels} (decompression bomb guard)")
            img.load()
            img = ImageOps.exif_transpose(img)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PhotoError(f"decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise PhotoError(f"corrupt or truncated image: {err}") from None
    rgb = _to_rgb(img)
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise PhotoError(f"{w}x{h} is smaller than min_size={min_size}")
    return np.ascontiguousarray(rgb)


def read_photo(path: str | Path, max_pixels: int = 100_000_000, min_size: int = 1) -> np.ndarray:
    """`decode_photo` on a file; errors name the file."""
    path = Path(path)
    try:
        return decode_photo(path.read_bytes(), path.name, max_pixels, min_size)
    except PhotoError as err:
        raise PhotoError(f"{path}: {err}") from None


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels and shape: equal images hash equal whatever their encoding."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def encode_png(rgb: np.ndarray) -> bytes:
    """uint8 RGB (or gray) -> PNG bytes; deterministic for equal pixels."""
    arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG (or any OpenCV-readable) bytes -> uint8 HxWx3 RGB."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("undecodable image bytes")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB array as PNG atomically."""
    from realsr_r1.atomic import write_bytes

    write_bytes(path, encode_png(rgb))
