"""Photo sources: bundled photos, incremental folder sync, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from realsr_r1.data.sources import BUNDLED_PHOTOS, SourceError, list_source, sync_source
from tests.conftest import SKIMAGE_DATA

EXT = [".png", ".jpg"]


def test_bundled_source_lists_the_real_photos() -> None:
    names = {f.name for f in list_source("bundled", EXT)}
    assert set(BUNDLED_PHOTOS) <= names


def test_folder_sync_is_incremental(photo_dir: Path, tmp_path: Path) -> None:
    (photo_dir / "sub").mkdir()
    shutil.copy(SKIMAGE_DATA / "ihc.png", photo_dir / "sub" / "ihc.png")
    (photo_dir / "notes.txt").write_text("ignored: not an image extension")
    (photo_dir / "annotations.json").write_text("{}")
    dest = tmp_path / "raw"
    state = sync_source(str(photo_dir), EXT, dest, {})
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "annotations.json", "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "sub/ihc.png",
    ]
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}

    # unchanged source: nothing is rewritten
    assert sync_source(str(photo_dir), EXT, dest, state) == state
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
        state = sync_source("s3://photos/incoming", EXT, dest, {})
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
