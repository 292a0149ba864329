"""Shared fixtures: real sample photos from the scikit-image wheel, GT crops, the tiny chain
(tokenizers fitted on real degraded crops, built once per session), the repository root."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from realsr_r1.config import PrepareParams
from realsr_r1.data.prepare import GtCrop, PrepareReport, iter_folder, prepare_photos
from tests.servers import MotoS3

REPO = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(skimage.data.__file__).parent


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder with four real photos (PNG and JPEG)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(SKIMAGE_DATA / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> list[GtCrop]:
    """GT crops (default prepare params, 4 crops a photo) of three real photos, in key order."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return sorted(prepare_photos(iter_folder(folder, [".png"]), PrepareParams(crops_per_image=4), 0, PrepareReport()), key=lambda c: c.key)


@pytest.fixture(scope="session")
def tiny_parts():
    """(ChainImages, residual k-means tokenizer, text tokenizer) of 48 samples: shared, never mutate them."""
    from tests.chain_data import tiny_chain

    return tiny_chain(n=48, codebook=64, residual=True)


@pytest.fixture(scope="session")
def tiny_image_parts():
    """The same with an image (not residual) k-means tokenizer, on other crops (seed 1)."""
    from tests.chain_data import tiny_chain

    return tiny_chain(n=48, codebook=64, residual=False, seed=1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on a free loopback port, one per test module."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


def tar_bytes(folder: Path) -> dict[str, bytes]:
    """Every tar under `folder` by relative path: for byte-identity checks of shards."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.tar"))}
