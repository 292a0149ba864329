"""Checkpoint releases on S3: upload a bundle with a sha256 manifest, list them, pull and verify.

A release lives under `s3://BUCKET/releases/NAME/VERSION/`. Every file is uploaded first and
`manifest.json` last, so a reader that only trusts prefixes holding a manifest never sees a
half-upload. A pull downloads into a temporary sibling of the target, checks every sha256 and
only then renames it into place; a mismatch deletes the download and fails.
The S3 endpoint and credentials come from the environment (`AWS_ENDPOINT_URL`, ...), as boto3 reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from realsr_r1.atomic import atomic_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREFIX = "releases"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20


class ReleaseError(RuntimeError):
    """A release that cannot be published, found or verified; the message is one line."""


@dataclass(frozen=True)
class Release:
    """One published release: where it is and what its manifest says."""

    name: str
    version: str
    created: str
    files: dict[str, dict[str, Any]]
    metrics: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


def check_name(kind: str, value: str) -> str:
    """Names and versions become S3 key segments: letters, digits, `._-` only."""
    if not _NAME_RE.match(value) or value in {".", ".."}:
        raise ReleaseError(f"invalid release {kind} {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`NAME` or `NAME@VERSION` -> (name, version or None for the latest)."""
    name, _, version = ref.partition("@")
    check_name("name", name)
    if version:
        check_name("version", version)
    return name, version or None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    bundle: Path, name: str, version: str, metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Manifest of every file under `bundle` (relative POSIX paths, sha256 and size)."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if not files:
        raise ReleaseError(f"{bundle}: bundle is empty, nothing to release")
    return {
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "metrics": metrics or {},
    }


def _version_key(version: str) -> tuple:
    """Natural order: v2 < v10; digits compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version))


class ReleaseStore:
    """Releases in one S3 bucket, through boto3 (endpoint from the environment)."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        if not bucket:
            raise ReleaseError("no release bucket: set params publish.bucket or $REALSR_RELEASE_BUCKET")
        self.bucket = bucket
        self.s3 = client or boto3.client("s3")

    # ------------------------------------------------------------------ helpers
    def _key(self, name: str, version: str, rel: str = "") -> str:
        return f"{PREFIX}/{name}/{version}/{rel}"

    def _fail(self, what: str, err: Exception) -> ReleaseError:
        return ReleaseError(f"s3://{self.bucket}: {what} failed: {err}".replace("\n", " "))

    def _read_manifest(self, name: str, version: str) -> Release | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(name, version, MANIFEST))["Body"]
            raw = json.loads(body.read())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise self._fail(f"reading {name}@{version}", err) from None
        except BotoCoreError as err:
            raise self._fail(f"reading {name}@{version}", err) from None
        except json.JSONDecodeError:
            raise ReleaseError(f"{name}@{version}: manifest is not valid JSON") from None
        try:
            return Release(
                name=raw["name"],
                version=raw["version"],
                created=raw["created"],
                files=dict(raw["files"]),
                metrics=dict(raw.get("metrics", {})),
            )
        except (KeyError, TypeError):
            raise ReleaseError(f"{name}@{version}: manifest lacks name/version/created/files") from None

    def _prefixes(self, prefix: str) -> list[str]:
        out: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            ):
                out += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except (ClientError, BotoCoreError) as err:
            raise self._fail("listing", err) from None
        return out

    # --------------------------------------------------------------------- API
    def list(self, name: str | None = None) -> list[Release]:
        """Complete releases (those with a manifest), by name then version order."""
        names = [name] if name else self._prefixes(f"{PREFIX}/")
        releases: list[Release] = []
        for n in sorted(names):
            for v in sorted(self._prefixes(f"{PREFIX}/{n}/"), key=_version_key):
                rel = self._read_manifest(n, v)
                if rel is not None:  # no manifest: an upload in progress or abandoned
                    releases.append(rel)
        return releases

    def latest(self, name: str) -> Release | None:
        """The newest complete release of `name` (by creation time, then version)."""
        found = self.list(check_name("name", name))
        if not found:
            return None
        return max(found, key=lambda r: (r.created, _version_key(r.version)))

    def get(self, name: str, version: str | None = None) -> Release:
        """A named version, or the latest; a clear error when there is none."""
        if version is None:
            rel = self.latest(name)
            if rel is None:
                raise ReleaseError(f"no release named {name!r} in s3://{self.bucket}/{PREFIX}/")
            return rel
        rel = self._read_manifest(check_name("name", name), check_name("version", version))
        if rel is None:
            raise ReleaseError(f"release {name}@{version} not found in s3://{self.bucket}/{PREFIX}/")
        return rel

    def next_version(self, name: str) -> str:
        """`v1` for a new name, else one past the highest `vN`; an unfinished highest one is reused.

        An upload that died before its manifest left files but no release: the next publish
        writes the same version again instead of leaving a gap and an orphan.
        """
        numbers = [int(v[1:]) for v in self._prefixes(f"{PREFIX}/{name}/") if re.fullmatch(r"v\d+", v)]
        top = max(numbers, default=0)
        if top and self._read_manifest(name, f"v{top}") is None:
            return f"v{top}"
        return f"v{top + 1}"

    def upload(self, bundle: Path, name: str, version: str, metrics: dict[str, Any] | None = None) -> Release:
        """Upload every file of `bundle`, then the manifest last; refuse to overwrite a release."""
        check_name("name", name)
        check_name("version", version)
        if self._read_manifest(name, version) is not None:
            raise ReleaseError(f"release {name}@{version} already exists; releases are immutable")
        manifest = build_manifest(bundle, name, version, metrics)
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as err:
            raise self._fail("opening the bucket", err) from None
        for rel, meta in manifest["files"].items():
            log.info("upload %s (%d bytes)", rel, meta["size"])
            try:
                self.s3.upload_file(
                    str(bundle / rel),
                    self.bucket,
                    self._key(name, version, rel),
                    ExtraArgs={"Metadata": {"sha256": meta["sha256"]}},
                )
            except (ClientError, BotoCoreError) as err:
                raise self._fail(f"uploading {rel}", err) from None
        self._drop_strays(name, version, set(manifest["files"]))
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self._key(name, version, MANIFEST),
                Body=body,
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as err:
            raise self._fail("writing the manifest", err) from None
        log.info(
            "released %s@%s: %d files to s3://%s/%s",
            name,
            version,
            len(manifest["files"]),
            self.bucket,
            self._key(name, version),
        )
        rel_obj = self._read_manifest(name, version)
        assert rel_obj is not None
        return rel_obj

    def _drop_strays(self, name: str, version: str, keep: set[str]) -> None:
        """Delete objects an earlier, unfinished upload of this version left that this one lacks."""
        prefix = self._key(name, version)
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"][len(prefix) :] not in keep:
                        log.info("removing stray %s from an unfinished upload", obj["Key"])
                        self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
        except (ClientError, BotoCoreError) as err:
            raise self._fail(f"cleaning {name}@{version}", err) from None

    def pull(self, name: str, version: str | None, dest: Path) -> Release:
        """Download a release into `dest` and verify every sha256; nothing is left on a mismatch."""
        rel = self.get(name, version)
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise ReleaseError(f"{dest}: exists and is not empty")
        with atomic_dir(dest) as tmp:  # a mismatch or a failed download leaves nothing behind
            for relpath, meta in sorted(rel.files.items()):
                target = (tmp / relpath).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise ReleaseError(f"{rel.ref}: manifest path {relpath!r} escapes the bundle")
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.s3.download_file(self.bucket, self._key(rel.name, rel.version, relpath), str(target))
                except (ClientError, BotoCoreError) as err:
                    raise self._fail(f"downloading {rel.ref} {relpath}", err) from None
                got = sha256_file(target)
                if got != meta["sha256"]:
                    raise ReleaseError(
                        f"{rel.ref}: checksum mismatch for {relpath} "
                        f"(manifest {meta['sha256'][:12]}, downloaded {got[:12]}); download deleted"
                    )
            (tmp / MANIFEST).write_text(
                json.dumps(
                    {
                        "name": rel.name,
                        "version": rel.version,
                        "created": rel.created,
                        "files": rel.files,
                        "metrics": rel.metrics,
                    },
                    indent=2,
                    sort_keys=True,
                )
                + "\n"
            )
        log.info("pulled %s into %s: %d files verified", rel.ref, dest, len(rel.files))
        return rel
