"""Shared fixtures: real sample photos from the scikit-image wheel, the repository root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import skimage.data

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
