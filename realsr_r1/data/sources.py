"""Input photo sources: the bundled sample photos, a local folder, or an S3 prefix.

`sync_source` mirrors a source into a local folder incrementally: unchanged files are not
copied again, so the folder's bytes (and every DVC stage below it) stay the same until the
source really changes. A sidecar `annotations.json` at the source root travels along.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from realsr_r1.atomic import write_bytes

log = logging.getLogger(__name__)

SIDECAR = "annotations.json"
# the real colour photos inside scikit-image's wheel (no download needed)
BUNDLED_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
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


def _bundled_files() -> Iterator[SourceFile]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    for name in BUNDLED_PHOTOS:
        path = root / name
        st = path.stat()
        yield SourceFile(name, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", str(path))
    if BUNDLED_SIDECAR.exists():
        st = BUNDLED_SIDECAR.stat()
        yield SourceFile(SIDECAR, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", str(BUNDLED_SIDECAR))


def s3_client():  # noqa: ANN201 (boto3 client type is dynamic)
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


def _fetch(file: SourceFile) -> bytes:
    if file.location.startswith("s3://"):
        parsed = urlparse(file.location)
        return s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    return Path(file.location).read_bytes()


def sync_source(source: str, extensions: list[str], dest: str | Path, state: dict[str, str]) -> dict[str, str]:
    """Mirror `source` into `dest`; copy only files whose fingerprint changed; drop vanished ones.

    `state` maps file name -> fingerprint of the last sync; the new state is returned.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = list_source(source, extensions)
    if not any(f.name != SIDECAR for f in files):
        raise SourceError(f"data.source: no image files ({', '.join(extensions)}) in {source}")
    new_state: dict[str, str] = {}
    copied = 0
    for file in files:
        target = dest / file.name
        if state.get(file.name) != file.fingerprint or not target.exists() or target.stat().st_size != file.size:
            write_bytes(target, _fetch(file))
            copied += 1
        new_state[file.name] = file.fingerprint
    removed = 0
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() and rel not in new_state:
            path.unlink()
            removed += 1
    for path in sorted(dest.rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
    log.info("source %s: %d files, %d copied, %d removed", source, len(files), copied, removed)
    return new_state
