"""The publish stage and its gate, run as `python -m stages.publish` against a real S3 (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from realsr_r1.release import gate, lookup
from realsr_r1.storage import Release, ReleaseStore
from tests.servers import MotoS3, s3_env

ROOT = Path(__file__).resolve().parents[1]


def _release(metrics: dict) -> Release:
    return Release("m", "v1", "2026-01-01T00:00:00+00:00", {}, metrics)


def test_gate_decisions() -> None:
    cand = {"evaluate": {"psnr": 21.0}}
    assert gate(cand, None, "evaluate.psnr", "max", 0.0, True).publish  # first release
    assert gate(cand, _release({"evaluate": {"psnr": 20.0}}), "evaluate.psnr", "max", 0.0, True).publish
    held = gate(cand, _release({"evaluate": {"psnr": 21.0}}), "evaluate.psnr", "max", 0.0, True)
    assert not held.publish and "does not improve on m@v1" in held.reason
    assert not gate(cand, _release({"evaluate": {"psnr": 20.9}}), "evaluate.psnr", "max", 0.5, True).publish
    assert gate(cand, _release({"evaluate": {"psnr": 22.0}}), "evaluate.psnr", "min", 0.0, True).publish
    missing = gate({}, _release({"evaluate": {"psnr": 1.0}}), "evaluate.psnr", "max", 0.0, True)
    assert not missing.publish and "missing from this run" in missing.reason
    assert gate({}, None, "evaluate.psnr", "max", 0.0, True).publish  # no evaluation yet, first release
    assert gate(cand, _release(cand), "evaluate.psnr", "max", 0.0, False).publish  # gate off
    assert lookup({"a": {"b": True}}, "a.b") is None and lookup({"a": {"b": 3}}, "a.b") == 3.0


def _repo(tmp: Path, bucket: str, **publish: object) -> Path:
    (tmp / "models/sft").mkdir(parents=True)
    (tmp / "models/sft/model.safetensors").write_bytes(b"\x00" * 4096)
    (tmp / "models/sft/config.json").write_text('{"hidden_size": 8}')
    (tmp / "metrics").mkdir()
    (tmp / "metrics/evaluate.json").write_text(json.dumps({"val": {"grpo": {"psnr": 20.0}}}))
    section = {
        "name": "tiny",
        "bucket": bucket,
        "artifacts": ["models/sft", "models/grpo", "params.yaml"],
        "metrics": ["metrics/evaluate.json"],
        "metric": "evaluate.val.grpo.psnr",
        **publish,
    }
    (tmp / "params.yaml").write_text(yaml.safe_dump({"publish": section}))
    lock = {"sft": {"cmd": "python -m stages.sft", "outs": [{"path": "models/sft", "md5": "0123456789abcdef.dir"}]}}
    (tmp / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": lock}))
    return tmp


def _publish(repo: Path, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **s3_env(endpoint), "PYTHONPATH": str(ROOT)}
    env.pop("REALSR_PARAMS", None)
    env.pop("REALSR_RELEASE_BUCKET", None)
    return subprocess.run(
        [sys.executable, "-m", "stages.publish"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.server
@pytest.mark.stage
def test_publish_stage_uploads_then_gates(s3: MotoS3, tmp_path: Path) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3.url,
        aws_access_key_id="t",
        aws_secret_access_key="t",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="rel")
    repo = _repo(tmp_path, "rel")
    first = _publish(repo, s3.url)
    assert first.returncode == 0, first.stderr
    assert "published tiny@v1 (first release of this name)" in first.stderr
    card = (repo / "models/release/MODEL_CARD.md").read_text()
    assert "# tiny" in card and "val.grpo.psnr" in card and "models/sft/model.safetensors" in card
    assert "- Policy checkpoint: `models/sft`" in card

    store = ReleaseStore("rel", client)
    rel = store.get("tiny")
    assert set(rel.files) == {
        "models/sft/model.safetensors",
        "models/sft/config.json",
        "params.yaml",
        "metrics/evaluate.json",
        "MODEL_CARD.md",
    }
    assert rel.metrics == {"evaluate": {"val": {"grpo": {"psnr": 20.0}}}}

    # the same bundle again: nothing new, and the checkout's files are byte for byte the same
    before = {p: (repo / p).read_bytes() for p in ("metrics/publish.json", "models/release/MODEL_CARD.md")}
    again = _publish(repo, s3.url)
    assert again.returncode == 0 and "not published: " in again.stderr, again.stderr
    assert {p: (repo / p).read_bytes() for p in before} == before

    # same metric: held back; better metric: v2
    (repo / "models/sft/model.safetensors").write_bytes(b"\x01" * 4096)
    held = _publish(repo, s3.url)
    assert held.returncode == 0 and "not published: evaluate.val.grpo.psnr 20 does not improve" in held.stderr
    (repo / "metrics/evaluate.json").write_text(json.dumps({"val": {"grpo": {"psnr": 20.5}}}))
    better = _publish(repo, s3.url)
    assert better.returncode == 0 and "published tiny@v2" in better.stderr
    assert json.loads((repo / "metrics/publish.json").read_text())["candidate"] == 20.5
    assert [r.ref for r in store.list("tiny")] == ["tiny@v1", "tiny@v2"]


@pytest.mark.server
@pytest.mark.stage
def test_card_states_contents_and_provenance_from_the_run(s3: MotoS3, tmp_path: Path) -> None:
    repo = _repo(tmp_path, "")
    (repo / "models/sft/model.safetensors").unlink()
    (repo / "models/sft/config.json").unlink()
    (repo / "models/sft/codebook.safetensors").write_bytes(b"\x00" * 64)  # tensors, but no model config
    assert _publish(repo, s3.url).returncode == 0
    card = (repo / "models/release/MODEL_CARD.md").read_text()
    assert "trained by" not in card and "SFT" not in card
    assert "- Policy checkpoint: none (this bundle holds no trained policy" in card
    assert "| models/sft | stage `sft` (`python -m stages.sft`; dvc.lock md5 0123456789ab) |" in card
    assert "| params.yaml | the pipeline's params" in card
    assert "| metrics/evaluate.json | not recorded by the pipeline |" in card
    assert json.loads((repo / "metrics/publish.json").read_text())["policy_checkpoints"] == []


@pytest.mark.server
@pytest.mark.stage
def test_publish_without_bucket_builds_bundle_only(s3: MotoS3, tmp_path: Path) -> None:
    repo = _repo(tmp_path, "")
    done = _publish(repo, s3.url)
    assert done.returncode == 0, done.stderr
    assert (repo / "models/release/models/sft/config.json").exists()
    assert "not published: no release bucket" in done.stderr
    assert json.loads((repo / "metrics/publish.json").read_text()) == {
        "files": 5,
        "bytes": sum(f.stat().st_size for f in (repo / "models/release").rglob("*") if f.is_file()),
        "policy_checkpoints": ["models/sft"],
        "metric": "evaluate.val.grpo.psnr",
        "candidate": 20.0,
    }


@pytest.mark.server
@pytest.mark.stage
def test_publish_errors_are_one_line(s3: MotoS3, tmp_path: Path) -> None:
    repo = _repo(tmp_path, "no-such-bucket")
    done = _publish(repo, s3.url)
    assert done.returncode == 1 and "error: publish: s3://no-such-bucket" in done.stderr
    (repo / "params.yaml").write_text(yaml.safe_dump({"publish": {"bucket": "", "artifacts": ["nothing"]}}))
    done = _publish(repo, s3.url)
    assert done.returncode == 2 and "none of ['nothing'] exists" in done.stderr
    (repo / "params.yaml").write_text(yaml.safe_dump({"publish": {"mode": "best"}}))
    done = _publish(repo, s3.url)
    assert done.returncode == 2 and "publish.mode" in done.stderr


def test_the_card_names_a_policy_folder_not_its_backbone() -> None:
    """A saved policy (policy.json, backbone/, projector) is one checkpoint, named by its folder."""
    from realsr_r1.release import checkpoints

    policy = ["models/sft/policy.json", "models/sft/backbone/config.json", "models/sft/backbone/model.safetensors",
              "models/sft/projector.safetensors", "models/tokenizer/image/codebook.safetensors"]
    assert checkpoints(policy) == ["models/sft"]
    assert checkpoints(["hf/config.json", "hf/model.safetensors", *policy]) == ["hf", "models/sft"]
