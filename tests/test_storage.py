"""Releases against a real S3 server (moto_server on a free loopback port)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from realsr_r1.storage import MANIFEST, ReleaseError, ReleaseStore, parse_ref, sha256_file
from tests.servers import MotoS3, s3_env

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    saved = {k: os.environ.get(k) for k in s3_env(server.url)}
    os.environ.update(s3_env(server.url))
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def store(s3: MotoS3, request: pytest.FixtureRequest) -> ReleaseStore:
    bucket = f"rel-{request.node.name.replace('_', '-')[:40].lower()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return ReleaseStore(bucket)


def make_bundle(root: Path, payload: bytes = b"weights") -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.safetensors").write_bytes(payload * 1000)
    (root / "model" / "config.json").write_text('{"hidden": 8}')
    (root / "MODEL_CARD.md").write_text("# card\n")
    return root


def test_upload_list_pull_roundtrip(store: ReleaseStore, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b")
    rel = store.upload(bundle, "tiny", "v1", metrics={"psnr": 20.5})
    assert rel.ref == "tiny@v1" and set(rel.files) == {
        "model/model.safetensors",
        "model/config.json",
        "MODEL_CARD.md",
    }
    assert [r.ref for r in store.list()] == ["tiny@v1"]
    out = tmp_path / "out"
    got = store.pull("tiny", None, out)
    assert got.metrics == {"psnr": 20.5}
    for relpath in rel.files:
        assert (out / relpath).read_bytes() == (bundle / relpath).read_bytes()
    assert json.loads((out / MANIFEST).read_text())["version"] == "v1"


def test_manifest_is_uploaded_last_and_half_upload_invisible(store: ReleaseStore, tmp_path: Path) -> None:
    keys: list[str] = []
    real_upload, real_put = store.s3.upload_file, store.s3.put_object

    def spy_upload(src: str, bucket: str, key: str, **kw: object) -> None:
        keys.append(key)
        real_upload(src, bucket, key, **kw)

    def spy_put(**kw: object) -> object:
        keys.append(str(kw["Key"]))
        return real_put(**kw)

    store.s3.upload_file, store.s3.put_object = spy_upload, spy_put  # type: ignore[method-assign]
    store.upload(make_bundle(tmp_path / "b"), "tiny", "v1")
    manifest = "releases/tiny/v1/manifest.json"
    assert keys[-1] == manifest and keys.count(manifest) == 1 and len(set(keys)) == 4

    # a half-upload (files without manifest) is not listed and does not count as latest
    store.s3.put_object(Bucket=store.bucket, Key="releases/tiny/v2/MODEL_CARD.md", Body=b"x")
    store.s3.put_object(Bucket=store.bucket, Key="releases/tiny/v2/stray.bin", Body=b"x")
    assert [r.ref for r in store.list("tiny")] == ["tiny@v1"]
    assert store.latest("tiny").version == "v1"  # type: ignore[union-attr]
    assert store.next_version("tiny") == "v2"  # the unfinished version is completed, not skipped
    store.upload(make_bundle(tmp_path / "c", b"again"), "tiny", store.next_version("tiny"))
    assert [r.ref for r in store.list("tiny")] == ["tiny@v1", "tiny@v2"]
    assert store.next_version("tiny") == "v3"
    left = store.s3.list_objects_v2(Bucket=store.bucket, Prefix="releases/tiny/v2/")["Contents"]
    assert sorted(o["Key"].rsplit("/v2/", 1)[1] for o in left) == [
        "MODEL_CARD.md",
        "manifest.json",
        "model/config.json",
        "model/model.safetensors",
    ]


def test_tampered_object_fails_pull_and_leaves_nothing(store: ReleaseStore, tmp_path: Path) -> None:
    store.upload(make_bundle(tmp_path / "b"), "tiny", "v1")
    store.s3.put_object(Bucket=store.bucket, Key="releases/tiny/v1/model/config.json", Body=b'{"hidden": 9}')
    out = tmp_path / "out"
    with pytest.raises(ReleaseError, match="checksum mismatch for model/config.json"):
        store.pull("tiny", "v1", out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # the temp download is gone too


def test_latest_by_default_and_named_version(store: ReleaseStore, tmp_path: Path) -> None:
    store.upload(make_bundle(tmp_path / "a", b"one"), "tiny", "v1")
    store.upload(make_bundle(tmp_path / "b", b"two"), "tiny", store.next_version("tiny"))
    assert store.latest("tiny").version == "v2"  # type: ignore[union-attr]
    store.pull("tiny", "v1", tmp_path / "o1")
    store.pull("tiny", None, tmp_path / "o2")
    assert (tmp_path / "o1/model/model.safetensors").read_bytes() == b"one" * 1000
    assert sha256_file(tmp_path / "o2/model/model.safetensors") == sha256_file(
        tmp_path / "b/model/model.safetensors"
    )


def test_errors_are_clear(store: ReleaseStore, tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="no release named 'nope'"):
        store.pull("nope", None, tmp_path / "o")
    with pytest.raises(ReleaseError, match="tiny@v7 not found"):
        store.pull("tiny", "v7", tmp_path / "o")
    store.upload(make_bundle(tmp_path / "b"), "tiny", "v1")
    with pytest.raises(ReleaseError, match="already exists"):
        store.upload(tmp_path / "b", "tiny", "v1")
    with pytest.raises(ReleaseError, match="invalid release name"):
        parse_ref("../etc@v1")
    with pytest.raises(ReleaseError, match="bundle is empty"):
        (tmp_path / "empty").mkdir()
        store.upload(tmp_path / "empty", "tiny", "v2")
    with pytest.raises(ReleaseError, match="NoSuchBucket|opening the bucket"):
        ReleaseStore("no-such-bucket").upload(tmp_path / "b", "tiny", "v1")


def test_manifest_path_escape_is_refused(store: ReleaseStore, tmp_path: Path) -> None:
    manifest = {
        "name": "evil",
        "version": "v1",
        "created": "2026-01-01T00:00:00+00:00",
        "files": {"../../x": {"sha256": "0" * 64, "size": 1}},
    }
    store.s3.put_object(Bucket=store.bucket, Key="releases/evil/v1/manifest.json", Body=json.dumps(manifest))
    with pytest.raises(ReleaseError, match="escapes the bundle"):
        store.pull("evil", "v1", tmp_path / "o")


def test_cli_lists_pulls_and_fails_in_one_line(store: ReleaseStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from realsr_r1.cli import app

    runner = CliRunner()
    env = {"REALSR_RELEASE_BUCKET": store.bucket}
    empty = runner.invoke(app, ["releases"], env=env)
    assert empty.exit_code == 0 and f"no releases in s3://{store.bucket}/releases/" in empty.output
    store.upload(make_bundle(tmp_path / "b"), "tiny", "v1")
    listed = runner.invoke(app, ["releases", "tiny"], env=env)
    assert listed.exit_code == 0 and "tiny@v1" in listed.output
    pulled = runner.invoke(app, ["pull", "tiny@v1", "-o", str(tmp_path / "o")], env=env)
    assert pulled.exit_code == 0 and "tiny@v1: 3 files verified" in pulled.output
    nobucket = runner.invoke(app, ["releases"], env={"REALSR_RELEASE_BUCKET": ""})
    assert nobucket.exit_code == 2 and "error: no release bucket" in nobucket.output
    busy = runner.invoke(app, ["pull", "tiny", "-o", str(tmp_path / "o"), "--bucket", store.bucket])
    assert busy.exit_code == 2 and "exists and is not empty" in busy.output
