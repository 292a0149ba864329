"""Input validation and GT cropping: every bad input is rejected with its reason, good ones kept."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from realsr_r1.config import PrepareParams
from realsr_r1.data.images import PhotoError, decode_photo
from realsr_r1.data.prepare import PrepareReport, iter_folder, prepare_photos


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_header_png() -> bytes:
    """A valid PNG header that claims 100000 x 100000 pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _png_chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def bad_inputs(astronaut: np.ndarray) -> dict[str, bytes]:
    """Inputs prepare must reject, encoded once for the module (the tests only read them)."""
    jpeg = encode(Image.fromarray(astronaut), "JPEG")
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "empty.png": b"",
        "notes.png": b"these are my holiday notes, not a picture\n",
        "tiny.png": encode(Image.fromarray(astronaut[:10, :10]), "PNG"),
        "bomb.png": huge_header_png(),
    }


@pytest.fixture(scope="module")
def good_inputs(astronaut: np.ndarray) -> dict[str, bytes]:
    """Unusual but valid photos, encoded once for the module."""
    rgb = Image.fromarray(astronaut)
    gray16 = data.moon().astype(np.uint16) * 257
    ok, rgb16 = cv2.imencode(".png", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert ok
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "gray16.png": encode(Image.fromarray(gray16), "PNG"),
        "rgb16.png": rgb16.tobytes(),
        "gray.png": encode(Image.fromarray(data.camera()), "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
    }


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.png", "notes.png", "tiny.png", "bomb.png"])
def test_bad_inputs_raise_a_clear_error(bad_inputs: dict[str, bytes], name: str) -> None:
    with pytest.raises(PhotoError) as err:
        decode_photo(bad_inputs[name], name, max_pixels=50_000_000, min_size=32)
    assert "\n" not in str(err.value)


def test_bomb_is_rejected_before_decoding(astronaut: np.ndarray) -> None:
    with pytest.raises(PhotoError, match="decompression bomb"):
        decode_photo(huge_header_png(), max_pixels=50_000_000)


@pytest.mark.parametrize("name", ["cmyk.jpg", "gray16.png", "rgb16.png", "gray.png", "rgba.png", "palette.png"])
def test_unusual_formats_decode_to_rgb8(
    astronaut: np.ndarray, good_inputs: dict[str, bytes], name: str
) -> None:
    rgb = decode_photo(good_inputs[name], name)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.std() > 10  # real content, not a blank or saturated image
    if name == "gray16.png":
        assert np.abs(rgb[..., 0].astype(int) - data.moon()).max() <= 1
    if name == "rgb16.png":
        assert np.abs(rgb.astype(int) - astronaut).max() <= 1


def test_exif_orientation_is_applied(astronaut: np.ndarray) -> None:
    img = Image.fromarray(astronaut[:, :300])  # 512 high, 300 wide
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_photo(buf.getvalue()).shape[:2] == (300, 512)


def test_prepare_keeps_good_rejects_bad_and_dedupes(bad_inputs: dict[str, bytes], good_inputs: dict[str, bytes]) -> None:
    photos = {**bad_inputs, **good_inputs}
    photos["copy_of_gray.png"] = photos["gray.png"]
    report = PrepareReport()
    p = PrepareParams(max_pixels=50_000_000)
    crops = list(prepare_photos(sorted(photos.items()), p, seed=0, report=report))
    rejected = {r["file"]: r["reason"] for r in report.rejected}
    assert set(rejected) == {"truncated.jpg", "empty.png", "notes.png", "tiny.png", "bomb.png", "gray.png"}
    assert "duplicate of copy_of_gray.png" in rejected["gray.png"]
    assert "empty" in rejected["empty.png"] and "not a recognised image" in rejected["notes.png"]
    assert len(report.accepted) == 6
    assert len(crops) == 6 * p.crops_per_image
    assert all(c.image.shape == (64, 64, 3) and c.image.dtype == np.uint8 for c in crops)
    assert len({c.key for c in crops}) == len(crops)
    assert sum(report.splits.values()) == len(crops)


def test_prepare_is_deterministic_and_split_is_per_photo(photo_dir: Path) -> None:
    p = PrepareParams(val_fraction=0.5)
    runs = [list(prepare_photos(iter_folder(photo_dir, [".png", ".jpg"]), p, 7, PrepareReport())) for _ in range(2)]
    assert [c.key for c in runs[0]] == [c.key for c in runs[1]]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(*runs))
    by_photo: dict[str, set[str]] = {}
    for c in runs[0]:
        by_photo.setdefault(c.meta["source"], set()).add(c.split)
    assert all(len(splits) == 1 for splits in by_photo.values())


def test_prepare_on_a_process_pool_equals_serial(bad_inputs: dict[str, bytes], good_inputs: dict[str, bytes]) -> None:
    photos = {**bad_inputs, **good_inputs}
    photos["copy_of_gray.png"] = photos["gray.png"]
    photos["zz_copy_of_png.png"] = photos["copy_of_gray.png"]
    p = PrepareParams(max_pixels=50_000_000, crops_per_image=3)
    runs = []
    for workers in (1, 2):
        report = PrepareReport()
        runs.append((list(prepare_photos(sorted(photos.items()), p, 5, report, workers=workers)), report.as_dict()))
    (serial, serial_report), (pooled, pooled_report) = runs
    assert pooled_report == serial_report and len(serial_report["rejected"]) == 7
    assert [(c.key, c.split, c.meta) for c in pooled] == [(c.key, c.split, c.meta) for c in serial]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(serial, pooled, strict=True))
