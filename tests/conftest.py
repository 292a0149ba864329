"""Shared fixtures: real sample photos from the scikit-image wheel, GT crops, the tiny chain
(tokenizers fitted on real degraded crops, built once per session), a moto S3 server; and the
hooks that enforce the `server` / `stage` / `distributed` markers (tests/markers.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from realsr_r1.config import PrepareParams
from realsr_r1.data.prepare import GtCrop, PrepareReport, iter_folder, prepare_photos
from tests import markers
from tests.helpers import SKIMAGE_DATA, tiny_chain
from tests.servers import MotoS3


# ------------------------------------------------------------------ the markers, enforced
def pytest_configure(config: pytest.Config) -> None:
    if markers.state.log is None:
        log = Path(tempfile.mkdtemp(prefix="pytest-markers-")) / "refused.log"
        log.touch()
        markers.state.log = str(log)
    markers.install(listen=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if markers.state.log is not None:
        shutil.rmtree(Path(markers.state.log).parent, ignore_errors=True)
        markers.state.log = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of `item` is set up (module and session ones included): whatever starts
    from here until the next test's set-up is started by `item`."""
    markers.begin(item.nodeid, (m.name for m in item.iter_markers()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    refused = markers.take_violations()
    if refused:  # even where the test caught the error (or a child's exit status hid it)
        report = outcome.get_result()
        report.outcome = "failed"
        report.longrepr = "\n".join(refused)


# ------------------------------------------------------------------ make test: -n 2 --dist loadfile
# The longest module (Prefect server, the flow's full runs: about half the suite's time) goes
# first, so that one worker runs it while the other runs every other module beside it.
FIRST = "tests/test_flow_e2e.py::"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler deals out files in this order
        items.sort(key=lambda item: not item.nodeid.startswith(FIRST))


# ------------------------------------------------------------------ fixtures
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
    return tiny_chain(n=48, codebook=64, residual=True)


@pytest.fixture(scope="session")
def tiny_image_parts():
    """The same with an image (not residual) k-means tokenizer, on other crops (seed 1)."""
    return tiny_chain(n=48, codebook=64, residual=False, seed=1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto S3 server on a free loopback port, one per test module."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()
