"""Photo sources: bundled photos, incremental folder sync, clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from realsr_r1.data.images import read_photo
from realsr_r1.data.sources import (
    BUNDLED_PHOTOS,
    UNSEEN_PHOTOS,
    SourceError,
    list_source,
    sync_source,
    wheel_photos,
)
from tests.helpers import SKIMAGE_DATA

EXT = [".png", ".jpg"]


def test_bundled_source_lists_the_real_photos() -> None:
    names = {f.name for f in list_source("bundled", EXT)}
    assert set(BUNDLED_PHOTOS) <= names


def test_unseen_photos_are_real_photos_never_in_the_bundled_source() -> None:
    """The never-seen-photos check is only honest if no bundled photo shares its pixels."""
    small = lambda path: read_photo(path)[::8, ::8]
    bundled = [small(p) for p in wheel_photos(BUNDLED_PHOTOS).values()]
    colour = set()
    for name, path in wheel_photos(UNSEEN_PHOTOS).items():
        photo = small(path)
        assert min(photo.shape[:2]) >= 192 // 8 and photo.std() > 10, name  # whole photos with content
        if photo.std(axis=2).mean() > 2:
            colour.add(name)
        assert not any(b.shape == photo.shape and np.abs(b.astype(int) - photo).mean() < 8 for b in bundled), name
    assert colour == set(UNSEEN_PHOTOS) - {"camera.png", "grass.png"}  # the two grey ones are scikit-image's


def test_folder_sync_is_incremental(photo_dir: Path, tmp_path: Path) -> None:
    (photo_dir / "sub").mkdir()
    shutil.copy(SKIMAGE_DATA / "ihc.png", photo_dir / "sub" / "ihc.png")
    (photo_dir / "notes.txt").write_text("ignored: not an image extension")
    (photo_dir / "annotations.json").write_text("{}")
    dest = tmp_path / "raw"
    state = sync_source(str(photo_dir), EXT, dest, {}).state
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "annotations.json", "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "sub/ihc.png",
    ]
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}

    # unchanged source: nothing is rewritten
    assert sync_source(str(photo_dir), EXT, dest, state).state == state
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == before

    # touched but unchanged bytes, or no record of the last sync: checked in place, not copied
    os.utime(photo_dir / "coffee.png")
    again = sync_source(str(photo_dir), EXT, dest, {})
    assert (again.copied, again.verified) == (0, 6)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == before

    # a changed file is re-copied, a removed one disappears, a new one arrives
    shutil.copy(SKIMAGE_DATA / "coffee.png", photo_dir / "chelsea.png")
    (photo_dir / "rocket.jpg").unlink()
    shutil.copy(SKIMAGE_DATA / "retina.jpg", photo_dir / "retina.jpg")
    sync_source(str(photo_dir), EXT, dest, state)
    assert (dest / "chelsea.png").read_bytes() == (SKIMAGE_DATA / "coffee.png").read_bytes()
    assert not (dest / "rocket.jpg").exists() and (dest / "retina.jpg").exists()


def test_source_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="folder not found"):
        list_source(str(tmp_path / "nope"), EXT)
    with pytest.raises(SourceError, match="unsupported URL scheme"):
        list_source("gs://bucket/photos", EXT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        sync_source(str(tmp_path / "empty"), EXT, tmp_path / "raw", {})


@pytest.mark.server
def test_s3_source_syncs_incrementally(photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from tests.servers import MotoS3, s3_env

    server = MotoS3(tmp_path)
    try:
        for key, value in s3_env(server.url).items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=server.url)
        s3.create_bucket(Bucket="photos")
        for path in sorted(photo_dir.iterdir()):
            s3.upload_file(str(path), "photos", f"incoming/{path.name}")
        s3.put_object(Bucket="photos", Key="incoming/readme.txt", Body=b"not a photo")
        dest = tmp_path / "raw"
        state = sync_source("s3://photos/incoming", EXT, dest, {}).state
        assert sorted(p.name for p in dest.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
        assert (dest / "rocket.jpg").read_bytes() == (photo_dir / "rocket.jpg").read_bytes()
        mtimes = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
        s3.upload_file(str(SKIMAGE_DATA / "ihc.png"), "photos", "incoming/new/ihc.png")
        sync_source("s3://photos/incoming/", EXT, dest, state)
        assert (dest / "new" / "ihc.png").exists()
        assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in dest.iterdir() if p.is_file())
        with pytest.raises(SourceError, match="cannot list"):
            list_source("s3://no-such-bucket/x", EXT)
    finally:
        server.stop()


@pytest.fixture
def moto_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A boto3 client on a real moto server; the AWS_* variables point the library at it."""
    import boto3

    from tests.servers import MotoS3, s3_env

    server = MotoS3(tmp_path)
    for key, value in s3_env(server.url).items():
        monkeypatch.setenv(key, value)
    try:
        yield boto3.client("s3", endpoint_url=server.url)
    finally:
        server.stop()


@pytest.mark.server
def test_s3_keys_that_escape_the_folder_are_refused(
    moto_s3, photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realsr_r1.config import Params
    from stages import ingest

    moto_s3.create_bucket(Bucket="photos")
    moto_s3.upload_file(str(photo_dir / "coffee.png"), "photos", "in/coffee.png")
    evil = (photo_dir / "rocket.jpg").read_bytes()
    for key in ("in/../escaped.jpg", "in/sub/../../up.jpg", "in//etc/abs.jpg", "in/..\\win.jpg", "in/a\\b.jpg"):
        moto_s3.put_object(Bucket="photos", Key=key, Body=evil)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ingest.main(Params.model_validate({"data": {"source": "s3://photos/in"}}))

    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == [
        "data/.ingest-state.json", "data/raw/coffee.png", "metrics/ingest.json",
    ]
    assert not list(tmp_path.rglob("escaped.jpg")) and not list(tmp_path.rglob("up.jpg"))
    assert not Path("/etc/abs.jpg").exists()
    report = json.loads((work / "metrics/ingest.json").read_text())
    assert report["photos"] == 1
    assert {r["file"]: r["reason"] for r in report["refused"]} == {
        "s3://photos/in/../escaped.jpg": "the name holds '..'",
        "s3://photos/in/sub/../../up.jpg": "the name holds '..'",
        "s3://photos/in//etc/abs.jpg": "the name is an absolute path",
        "s3://photos/in/..\\win.jpg": "the name holds a backslash",
        "s3://photos/in/a\\b.jpg": "the name holds a backslash",
    }


@pytest.mark.server
def test_fresh_checkout_with_restored_raw_downloads_nothing(moto_s3, photo_dir: Path, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    moto_s3.create_bucket(Bucket="photos")
    for path in sorted(photo_dir.iterdir()):
        moto_s3.upload_file(str(path), "photos", f"in/{path.name}")
    # one object uploaded in parts: its ETag is the multipart MD5, not the file's MD5
    big = np.random.default_rng(0).integers(0, 256, 11 << 20, dtype=np.uint8).tobytes()
    (tmp_path / "big.png").write_bytes(big)
    five_mib = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    moto_s3.upload_file(str(tmp_path / "big.png"), "photos", "in/big.png", Config=five_mib)
    assert "-" in moto_s3.head_object(Bucket="photos", Key="in/big.png")["ETag"]

    first = sync_source("s3://photos/in", EXT, tmp_path / "worker1" / "raw", {})
    assert first.copied == 5
    # a new worker: data/raw restored (as `dvc pull` does: same bytes, new mtimes), no sync state
    shutil.copytree(tmp_path / "worker1" / "raw", tmp_path / "worker2" / "raw")
    second = sync_source("s3://photos/in", EXT, tmp_path / "worker2" / "raw", {}, workers=3)
    assert (second.copied, second.verified, second.state) == (0, 5, first.state)

    # a corrupted restored file (same size) is fetched again
    raw2 = tmp_path / "worker2" / "raw"
    (raw2 / "big.png").write_bytes(bytes(len(big)))
    third = sync_source("s3://photos/in", EXT, raw2, {})
    assert third.copied == 1 and (raw2 / "big.png").read_bytes() == big
