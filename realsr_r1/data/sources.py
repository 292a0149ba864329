"""Input photo sources: the bundled sample photos, a local folder, or an S3 prefix.

`sync_source` mirrors a source into a local folder incrementally: files the folder already
holds are not fetched again, so the folder's bytes (and every DVC stage below it) stay the same
until the source really changes. A sidecar `annotations.json` at the source root travels along.
"""

from __future__ import annotations

import filecmp
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from realsr_r1.atomic import write_bytes

log = logging.getLogger(__name__)

SIDECAR = "annotations.json"
MAX_PART_SIZE_GUESSES = 16  # multipart ETags: part sizes tried before fetching the object again
# Real colour photos that ship inside installed wheels (no download): file name in data/raw ->
# (distribution, path inside it). Licences: README "Licences".
BUNDLED_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut.png": ("scikit-image", "skimage/data/astronaut.png"),
    "chelsea.png": ("scikit-image", "skimage/data/chelsea.png"),
    "coffee.png": ("scikit-image", "skimage/data/coffee.png"),
    "hubble_deep_field.jpg": ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    "ihc.png": ("scikit-image", "skimage/data/ihc.png"),
    "motorcycle_left.png": ("scikit-image", "skimage/data/motorcycle_left.png"),
    "motorcycle_right.png": ("scikit-image", "skimage/data/motorcycle_right.png"),
    "retina.jpg": ("scikit-image", "skimage/data/retina.jpg"),
    "rocket.jpg": ("scikit-image", "skimage/data/rocket.jpg"),
    "china.jpg": ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    "flower.jpg": ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    "grace_hopper.jpg": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    # the TID2013 reference photos pyiqa ships (512x384 crops of Kodak PhotoCD photos)
    "tid2013_I03.bmp": ("pyiqa", "ResultsCalibra/ref_dir/I03.bmp"),
    "tid2013_I04.bmp": ("pyiqa", "ResultsCalibra/ref_dir/I04.bmp"),
    "tid2013_I06.bmp": ("pyiqa", "ResultsCalibra/ref_dir/I06.bmp"),
    "tid2013_I08.bmp": ("pyiqa", "ResultsCalibra/ref_dir/I08.bmp"),
    "tid2013_I19.bmp": ("pyiqa", "ResultsCalibra/ref_dir/I19.bmp"),
}
# Photos kept OUT of the bundled source: the default folder of the never-seen-photos check
# (`realsr unseen`, the evaluate stage's `unseen` benchmark). pyiqa's test photos: a smartphone
# photo (SPAQ) and three video frames; scikit-image's grey cameraman and grass photos.
UNSEEN_PHOTOS: dict[str, tuple[str, str]] = {
    "spaq_10241.jpg": ("pyiqa", "tests/test_efficiency_img_dir/SPAQ_10241.jpg"),
    "frame_4wrwr48cdk6rbcjl.jpg": ("pyiqa", "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg"),
    "frame_7gzdcz9sif0ekg31.jpg": ("pyiqa", "tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg"),
    "frame_9ogwhvvy7gfj6jzh.jpg": ("pyiqa", "tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg"),
    "camera.png": ("scikit-image", "skimage/data/camera.png"),
    "grass.png": ("scikit-image", "skimage/data/grass.png"),
}
BUNDLED_SIDECAR = Path(__file__).resolve().parent.parent / "assets" / "bundled_annotations.json"


class SourceError(RuntimeError):
    """A source that cannot be read (missing folder, bad URL, S3 failure)."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its name relative to the source root, size, and a fingerprint."""

    name: str
    size: int
    fingerprint: str  # ETag for S3, size+mtime for local files: cheap change detection
    location: str  # absolute path or s3://bucket/key


def _is_wanted(name: str, extensions: list[str]) -> bool:
    return name == SIDECAR or Path(name).suffix.lower() in {e.lower() for e in extensions}


def _local_files(root: Path, extensions: list[str]) -> Iterator[SourceFile]:
    if not root.is_dir():
        raise SourceError(f"data.source: folder not found: {root}")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            if _is_wanted(rel, extensions):
                st = path.stat()
                yield SourceFile(rel, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", str(path))


def wheel_photos(photos: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """Where each (distribution, path) photo lies in this environment; a missing one is one clear line."""
    from importlib.metadata import PackageNotFoundError, distribution

    paths = {}
    for name, (dist, rel) in photos.items():
        try:
            path = Path(distribution(dist).locate_file(rel))
        except PackageNotFoundError:
            raise SourceError(f"data.source: bundled photo {name}: package {dist} is not installed") from None
        if not path.is_file():
            raise SourceError(f"data.source: bundled photo {name}: {path} not found (reinstall {dist})")
        paths[name] = path
    return paths


def _bundled_files() -> Iterator[SourceFile]:
    for name, path in wheel_photos(BUNDLED_PHOTOS).items():
        st = path.stat()
        yield SourceFile(name, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", str(path))
    if BUNDLED_SIDECAR.exists():
        st = BUNDLED_SIDECAR.stat()
        yield SourceFile(SIDECAR, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", str(BUNDLED_SIDECAR))


def s3_client():
    """A boto3 S3 client; honours AWS_ENDPOINT_URL and the usual AWS_* variables."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _s3_files(url: str, extensions: list[str]) -> Iterator[SourceFile]:
    from botocore.exceptions import ClientError

    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if rel and not rel.endswith("/") and _is_wanted(rel, extensions):
                    yield SourceFile(rel, obj["Size"], obj["ETag"].strip('"'), f"s3://{bucket}/{obj['Key']}")
    except ClientError as err:  # a missing bucket or denied access is the user's to fix; the rest may be transient
        if err.response.get("Error", {}).get("Code") in {"NoSuchBucket", "AccessDenied", "InvalidBucketName"}:
            raise SourceError(f"data.source: cannot list {url}: {err}") from None
        raise


def list_source(source: str, extensions: list[str]) -> list[SourceFile]:
    """The files of `source` (bundled, a folder, or s3://bucket/prefix), sorted by name."""
    if source == "bundled":
        files = list(_bundled_files())
    elif source.startswith("s3://"):
        files = list(_s3_files(source, extensions))
    elif "://" in source:
        raise SourceError(f"data.source: unsupported URL scheme in {source!r} (use a folder or s3://)")
    else:
        files = list(_local_files(Path(source).expanduser(), extensions))
    return sorted(files, key=lambda f: f.name)


def unsafe_reason(name: str) -> str | None:
    """Why a source file name cannot be written under the destination (None: it can)."""
    if "\\" in name:
        return "holds a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "holds '..'"
    if "" in parts or "." in parts:
        return "holds an empty or '.' path component"
    return None


def _md5_etag(path: Path, part_size: int | None) -> str:
    """The S3 ETag `path` would get: its MD5, or for a multipart upload the MD5 of the part MD5s."""
    if part_size is None:
        h = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    digests = []
    with path.open("rb") as f:
        for part in iter(lambda: f.read(part_size), b""):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def holds(file: SourceFile, target: Path) -> bool:
    """Whether `target` already holds `file`'s bytes, judged without downloading it.

    This is what lets a fresh worker with data/raw restored (from DVC) skip every download:
    local files are compared byte for byte, S3 objects by their ETag (the MD5, or for a multipart
    upload the MD5 of part MD5s, tried for each whole-MiB part size that gives that many parts).
    """
    if not target.is_file() or target.stat().st_size != file.size:
        return False
    if not file.location.startswith("s3://"):
        return filecmp.cmp(file.location, target, shallow=False)
    etag = file.fingerprint
    if "-" not in etag:
        return _md5_etag(target, None) == etag
    parts, mib = int(etag.rsplit("-", 1)[1]), 1 << 20
    if parts == 1:
        return _md5_etag(target, file.size) == etag
    # (parts - 1) * part_size < size <= parts * part_size; uploaders use whole MiB part sizes
    low, high = -(-file.size // parts), -(-file.size // (parts - 1)) - 1
    sizes = [s * mib for s in range(-(-low // mib), high // mib + 1)][:MAX_PART_SIZE_GUESSES]
    return any(_md5_etag(target, size) == etag for size in [low, *sizes])


@dataclass
class SyncReport:
    """What a sync did: the new state (name -> fingerprint), counts, and the refused names with reasons."""

    state: dict[str, str]
    files: int = 0
    copied: int = 0
    verified: int = 0
    removed: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)


def _fetcher(source: str) -> Callable[[SourceFile], bytes]:
    """Reads one file's bytes; for S3 through one client shared by the download threads (boto3 clients are thread-safe)."""
    if not source.startswith("s3://"):
        return lambda file: Path(file.location).read_bytes()
    client = s3_client()

    def fetch(file: SourceFile) -> bytes:
        parsed = urlparse(file.location)
        return client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()

    return fetch


def sync_source(
    source: str, extensions: list[str], dest: str | Path, state: dict[str, str], workers: int = 8
) -> SyncReport:
    """Mirror `source` into `dest`; fetch only files `dest` does not already hold; drop vanished ones.

    `state` maps file name -> fingerprint of the last sync on this machine (a fast path: a file
    whose fingerprint and size are unchanged is not looked at). Without it, `dest`'s own bytes
    decide (`holds`), so a fresh checkout whose `dest` was restored downloads nothing. Names that
    would land outside `dest` (`..`, absolute, backslash) are refused and reported, never written.
    Downloads run on a pool of `workers` threads.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = SyncReport(state={})
    files = []
    for file in list_source(source, extensions):
        reason = unsafe_reason(file.name)
        if reason:
            log.warning("refused %s: the name %s", file.location, reason)
            report.refused.append({"file": file.location, "reason": f"the name {reason}"})
        else:
            files.append(file)
    if not any(f.name != SIDECAR for f in files):
        raise SourceError(f"data.source: no image files ({', '.join(extensions)}) in {source}")
    report.files = len(files)
    todo = []
    for file in files:
        target = dest / file.name
        fast = state.get(file.name) == file.fingerprint and target.is_file() and target.stat().st_size == file.size
        if not fast:
            if holds(file, target):
                report.verified += 1
            else:
                todo.append(file)
        report.state[file.name] = file.fingerprint
    fetch = _fetcher(source)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = {pool.submit(fetch, file): file for file in todo}
        for job in tqdm(as_completed(jobs), total=len(jobs), desc="ingest", unit="file", disable=not jobs):
            write_bytes(dest / jobs[job].name, job.result())
    report.copied = len(todo)
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in report.state:
            path.unlink()
            report.removed += 1
    for path in sorted(dest.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
    log.info(
        "source %s: %d files, %d fetched, %d verified in place, %d removed, %d refused",
        source, report.files, report.copied, report.verified, report.removed, len(report.refused),
    )
    return report
