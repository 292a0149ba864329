"""End to end: `prefect deployment run grpo/full` on tiny params (`TINY_PIPELINE`), with real servers.

One session (module fixture): a copy of this repository in a temporary git repo; moto's S3
server behind a relay (so "S3 down" can be staged without losing moto's in-memory objects);
a Prefect server with its own SQLite database; a process worker; `prefect deploy --all`.
The pipeline runs once for real (`first_run`), and its results are committed (`committed`):
module fixtures, so any test, picked alone or with others, finds what it builds on. Every test
that runs the flow takes `first_run`, so it runs on the state it has when the file runs in order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.dag import read_stages
from tests.helpers import GIT_ID, TINY_PIPELINE, copy_repo, set_params
from tests.servers import BIN, MotoS3, PrefectServer, Relay, Worker, s3_env

pytestmark = [pytest.mark.server, pytest.mark.stage]
ROOT = Path(__file__).resolve().parents[1]
DVC_BUCKET, RELEASE_BUCKET, RELEASE = "realsr-dvc", "realsr-releases", "realsr-r1-tiny"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
ALWAYS_CHANGED = {"ingest": ["always changed"]}  # `dvc status` of an always-run stage, with its outputs in place


@dataclass
class Session:
    repo: Path
    env: dict[str, str]
    s3: MotoS3
    relay: Relay
    prefect: PrefectServer
    worker: Worker
    work: Path

    def run(self, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        done = subprocess.run(
            list(args),
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def api(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            f"{self.prefect.api_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def deployment_run(
        self, *params: str, name: str = "grpo/full"
    ) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
        done = self.run(
            str(BIN / "prefect"),
            "deployment",
            "run",
            name,
            *params,
            "--watch",
            "--watch-timeout",
            "900",
            check=False,
            timeout=960,
        )
        text = done.stdout + done.stderr
        m = re.search(r"UUID:\s*([0-9a-f-]{36})", text)
        assert m, text[-3000:]
        runs = self.api("/flow_runs/filter", {"flow_runs": {"id": {"any_": [m.group(1)]}}})
        return done, runs[0]

    def artifact(self, flow_run_id: str, key: str) -> Any:
        arts = self.api(
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id]}}},
        )
        assert len(arts) == 1, arts
        return arts[0]["data"]

    def stages_artifact(self, flow_run_id: str) -> dict[str, bool]:
        data = self.artifact(flow_run_id, "grpo-stages")
        rows = json.loads(data) if isinstance(data, str) else data
        return {r["stage"]: r["executed"] for r in rows}

    def realsr(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", "from realsr_r1.cli import app; app()", *args, check=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    work = tmp_path_factory.mktemp("e2e")
    repo = work / "repo"
    repo.mkdir()
    copy_repo(ROOT, repo, TINY_PIPELINE)

    s3 = MotoS3(work)
    relay = Relay(s3.port)
    direct = s3.client()
    for bucket in (DVC_BUCKET, RELEASE_BUCKET):
        direct.create_bucket(Bucket=bucket)
    prefect = PrefectServer(work)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "REALSR_", "PYTHONPATH"))
    }
    env.update(s3_env(relay.url))
    env.update(prefect.env)
    env.update(GIT_ID)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "REALSR_DVC_BUCKET": DVC_BUCKET,
            "REALSR_RELEASE_BUCKET": RELEASE_BUCKET,
            "PWD": str(repo),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
    )
    sess = Session(repo, env, s3, relay, prefect, None, work)  # type: ignore[arg-type]
    try:
        sess.run("make", "remote-s3")
        for pool in ("realsr-gpu", "realsr-remote"):
            sess.run(str(BIN / "prefect"), "work-pool", "create", pool, "--type", "process")
        sess.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        sess.worker = Worker("realsr-gpu", repo, env, work / "worker.log")
        yield sess
    finally:
        if sess.worker is not None:
            sess.worker.stop()
        prefect.stop()
        relay.down()
        s3.stop()


def _dag_order(sess: Session) -> list[str]:
    """Every stage of the copied repo's dvc.yaml, in the order `dvc dag` allows."""
    return [s.name for s in read_stages(sess.repo / "dvc.yaml")]


def _remote_keys(sess: Session) -> set[str]:
    client = sess.s3.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=DVC_BUCKET, Prefix="dvc/files/md5/"):
        keys |= {o["Key"].removeprefix("dvc/files/md5/") for o in page.get("Contents", [])}
    return keys


def _lock_keys(sess: Session, lock_text: str | None = None) -> set[str]:
    """Cache objects of every cached output a dvc.lock records (default: the checkout's), directories expanded."""
    spec = yaml.safe_load((sess.repo / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load(lock_text or (sess.repo / "dvc.lock").read_text())["stages"]
    cache = sess.repo / ".dvc/cache/files/md5"
    keys: set[str] = set()
    for name, stage in spec.items():
        cached = {
            p if isinstance(p, str) else next(iter(p))
            for p in stage.get("outs", [])
            if isinstance(p, str) or next(iter(p.values())).get("cache", True)
        }
        for out in lock[name]["outs"]:
            if out["path"] not in cached:
                continue
            md5 = out["md5"]
            keys.add(f"{md5[:2]}/{md5[2:]}")
            if md5.endswith(".dir"):
                entries = json.loads((cache / md5[:2] / md5[2:]).read_text())
                keys |= {f"{e['md5'][:2]}/{e['md5'][2:]}" for e in entries}
    return keys


Run = tuple[subprocess.CompletedProcess, dict[str, Any]]


@pytest.fixture(scope="module")
def first_run(session: Session) -> Run:
    """`grpo/full` once on the fresh copy: every stage runs, its outputs are pushed, v1 is published."""
    done, run = session.deployment_run()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:] + session.worker.log.read_text()[-5000:]
    return done, run


@pytest.fixture(scope="module")
def committed(session: Session, first_run: Run) -> str:
    """The first run's lock, metrics and plots (new files included) committed; HEAD."""
    session.run("git", "add", "-A")
    session.run("git", "commit", "-qm", "the first run's lock, metrics and plots", "--allow-empty")
    return session.run("git", "rev-parse", "HEAD").stdout.strip()


def test_full_deployment_runs_every_stage(session: Session, first_run: Run) -> None:
    _, run = first_run
    assert run["state"]["type"] == "COMPLETED"
    executed = session.stages_artifact(run["id"])
    order = list(executed)
    assert order == _dag_order(session) and all(executed.values())
    assert order[0] == "ingest" and order[-1] == "publish"
    assert list((session.repo / "data/shards/train").glob("shard-*.tar"))
    metrics_art = session.api("/artifacts/filter", {"artifacts": {"key": {"any_": ["synthesize-metrics"]}}})
    assert metrics_art and "| metrics/synthesize.json | train.samples |" in metrics_art[0]["data"]


def test_every_stage_output_is_in_the_s3_remote(session: Session, first_run: Run) -> None:
    status = session.run(sys.executable, "-m", "dvc", "status", "--cloud", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    wanted = _lock_keys(session)
    assert len(wanted) > 40 and wanted <= _remote_keys(session)


def test_published_release_pulls_and_verifies(session: Session, first_run: Run) -> None:
    listed = session.realsr("releases")
    assert listed.returncode == 0 and f"{RELEASE}@v1" in listed.stdout, listed.stderr
    out = session.work / "pulled"
    got = session.realsr("pull", RELEASE, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert "files verified" in got.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"params.yaml", "MODEL_CARD.md", "metrics/synthesize.json"} <= set(manifest["files"])
    # the card says what the bundle holds and which stages made it, from this run's dvc.lock
    card = (out / "MODEL_CARD.md").read_text()
    lock = yaml.safe_load((session.repo / "dvc.lock").read_text())["stages"]
    tokenizer_md5 = next(o["md5"] for o in lock["tokenizer"]["outs"] if o["path"] == "models/tokenizer")
    made_by = f"stage `tokenizer` (`python -m stages.tokenizer`; dvc.lock md5 {tokenizer_md5[:12]})"
    assert f"| models/tokenizer | {made_by} |" in card
    assert "| metrics/synthesize.json | stage `synthesize`" in card
    assert "| models/sft | stage `sft` (`python -m stages.sft`; dvc.lock md5" in card
    assert "| models/grpo | stage `grpo` (`python -m stages.grpo`; dvc.lock md5" in card
    assert "- Policy checkpoint: `models/grpo`, `models/sft`" in card and "| metrics/grpo.json | stage `grpo`" in card


def _git_status(sess: Session) -> str:
    return sess.run("git", "status", "--porcelain").stdout


def test_second_run_executes_no_stage_but_publishes_to_a_new_destination(session: Session, committed: str) -> None:
    # what the first run made is the committed state now; a run must leave it as it is
    assert _git_status(session) == ""
    # an empty release bucket: the destination changed, the pipeline's inputs did not
    direct = session.s3.client()
    for obj in direct.list_objects_v2(Bucket=RELEASE_BUCKET).get("Contents", []):
        direct.delete_object(Bucket=RELEASE_BUCKET, Key=obj["Key"])
    assert f"{RELEASE}@" not in session.realsr("releases").stdout

    done, run = session.deployment_run()
    assert done.returncode == 0 and run["state"]["type"] == "COMPLETED"
    executed = session.stages_artifact(run["id"])
    assert list(executed) == _dag_order(session)
    # publish follows the bucket; ingest always rescans the source (unchanged photos: nothing below runs)
    assert executed.pop("publish") and executed.pop("ingest") and not any(executed.values())
    assert f"{RELEASE}@v1" in session.realsr("releases").stdout
    assert _git_status(session) == ""


def test_s3_down_during_push_retries_then_fails_then_recovers(session: Session, committed: str) -> None:
    before_remote = _remote_keys(session)
    # synthesize alone, with a param override (a DVC experiment): its new outputs must be pushed
    params = json.dumps(
        {"stages": ["synthesize"], "overrides": {"synthesize.per_image": 2}, "retries": 2, "retry_delay_s": 1}
    )
    session.relay.down()
    try:
        done, run = session.deployment_run("--params", params)
    finally:
        session.relay.up()
    assert done.returncode == 1 and run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "push of stage synthesize failed" in message and "attempt 3" in message, message
    tasks = session.api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    synth = [t for t in tasks if t["name"].startswith("synthesize")]
    assert len(synth) == 1 and synth[0]["run_count"] == 3 and synth[0]["state"]["type"] == "FAILED"
    assert _remote_keys(session) == before_remote  # nothing half-pushed became visible as lost

    done, run = session.deployment_run("--params", params)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert session.stages_artifact(run["id"]) == {"synthesize": False}  # computed before, only pushed now
    committed = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=session.repo, capture_output=True, text=True, check=True
    ).stdout
    assert (session.repo / "params.yaml").read_text() == committed  # put back after the experiment
    # the checkout is as committed: lock, metrics and outputs are the committed params' ones
    assert _git_status(session) == ""
    status = session.run(sys.executable, "-m", "dvc", "status", "--json")
    assert json.loads(status.stdout or "{}") == ALWAYS_CHANGED, status.stdout
    exps = json.loads(session.run(sys.executable, "-m", "dvc", "exp", "show", "--json").stdout)
    assert '"per_image": 2' in json.dumps(exps)  # the experiment is recorded by DVC
    status = session.run(sys.executable, "-m", "dvc", "status", "--cloud", "--json")
    assert json.loads(status.stdout or "{}") == {}
    newest_exp = session.run(
        "git", "for-each-ref", "refs/exps", "--sort=-committerdate", "--format=%(objectname)"
    )
    exp_lock = session.run("git", "show", f"{newest_exp.stdout.split()[0]}:dvc.lock").stdout
    after = _remote_keys(session)
    assert before_remote <= after and _lock_keys(session) <= after  # nothing lost
    # nothing beyond what the lock files (the committed one, the experiment's) reference
    assert after == before_remote | _lock_keys(session, exp_lock) and after != before_remote
    releases = session.realsr("releases", RELEASE)
    assert releases.stdout.count(f"{RELEASE}@") == 1  # the gate held back a duplicate release


def test_tampered_release_object_fails_pull(session: Session, first_run: Run) -> None:
    direct = session.s3.client()
    direct.put_object(Bucket=RELEASE_BUCKET, Key=f"releases/{RELEASE}/v1/params.yaml", Body=b"seed: 1\n")
    out = session.work / "tampered"
    got = session.realsr("pull", f"{RELEASE}@v1", "-o", str(out))
    assert got.returncode == 2 and "checksum mismatch for params.yaml" in got.stderr, got.stderr
    assert not out.exists()


def test_deployments_and_nightly_schedule(session: Session) -> None:
    deps = {d["name"]: d for d in session.api("/deployments/filter", {})}
    assert set(deps) == {"full", "nightly", "remote"}
    nightly = deps["nightly"]
    assert nightly["parameters"]["force"] == ["ingest"] and nightly["parameters"]["publish"] is True
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert deps["full"]["work_pool_name"] == nightly["work_pool_name"] == "realsr-gpu"


def test_nightly_rescans_the_source_and_publishes_nothing_new(session: Session, first_run: Run) -> None:
    done, run = session.deployment_run(name="grpo/nightly")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    executed = session.stages_artifact(run["id"])
    # ingest is forced (rescan); unchanged photos leave prepare and the rest cached; publish always
    # runs, finds the release identical (and the gate unmoved): no new release
    assert executed["ingest"] is True and executed["publish"] is True
    assert not any(v for k, v in executed.items() if k not in {"ingest", "publish"})
    assert session.realsr("releases", RELEASE).stdout.count(f"{RELEASE}@") == 1


def test_watch_shows_why_a_run_failed(session: Session, first_run: Run) -> None:
    done, run = session.deployment_run("--params", json.dumps({"overrides": {"synthesize.per_imag": 2}}))
    assert done.returncode == 1 and run["state"]["type"] == "FAILED"
    reason = "unknown key 'synthesize.per_imag'"
    assert reason in run["state"]["message"], run["state"]["message"]  # the UI's state message
    assert reason in " ".join(done.stdout.split()), done.stdout[-3000:]  # and `--watch` (lines wrapped)


def test_bad_params_fail_at_once_without_retries(session: Session, first_run: Run) -> None:
    done, run = session.deployment_run("--params", json.dumps({"overrides": {"publish.mode": "best"}}))
    assert done.returncode == 1 and "key 'publish.mode'" in run["state"]["message"], run["state"]["message"]
    assert session.api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}}) == []

    # a stage that exits on a bad input (exit 2) is deterministic: one attempt, no retry
    done, run = session.deployment_run(
        "--params",
        json.dumps(
            {
                "stages": ["ingest"],
                "overrides": {"data.source": str(session.work / "no-such-folder")},
                "retries": 2,
                "retry_delay_s": 1,
            }
        ),
    )
    assert done.returncode == 1 and "stage ingest failed" in run["state"]["message"], run["state"]["message"]
    assert "folder not found" in run["state"]["message"]
    tasks = session.api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    assert [t["run_count"] for t in tasks] == [1]


def _wait(sess: Session, ids: list[str], timeout: float = 900) -> list[dict[str, Any]]:
    """The flow runs `ids`, once every one of them reached a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = sess.api("/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
        if len(runs) == len(ids) and all(r["state"]["type"] in FINAL for r in runs):
            return sorted(runs, key=lambda r: ids.index(r["id"]))
        time.sleep(2)
    raise AssertionError(f"runs {ids} not finished after {timeout}s: {sess.worker.log.read_text()[-3000:]}")


def test_runs_in_one_checkout_queue_instead_of_failing(session: Session, first_run: Run) -> None:
    # DVC locks the checkout while a command runs: without the flow's concurrency limit the
    # second run fails at once with "'data/prepared' is busy"
    params = json.dumps({"stages": ["ingest", "prepare"], "publish": False})
    ids = []
    for _ in range(2):
        done = session.run(str(BIN / "prefect"), "deployment", "run", "grpo/full", "--params", params)
        ids.append(re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout).group(1))
        time.sleep(1)
    runs = _wait(session, ids)
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"] * 2, [r["state"] for r in runs]
    spans = []
    for run in runs:
        tasks = session.api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
        assert {t["name"].split("-")[0] for t in tasks} == {"ingest", "prepare"}
        spans.append((min(_ts(t["start_time"]) for t in tasks), max(_ts(t["end_time"]) for t in tasks)))
    first, second = sorted(spans)
    assert second[0] >= first[1], spans  # the second run's stages start once the first's are done


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Remote:
    """A git server (a bare repository) and a worker of the pool `realsr-remote` in an empty folder."""

    git: Path
    folder: Path
    env: dict[str, str]
    worker: Worker

    def clones(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def remote(session: Session) -> Iterator[Remote]:
    git = session.work / "git-server" / "realsr-r1.git"
    session.run("git", "clone", "--bare", "-q", str(session.repo), str(git))
    folder = session.work / "remote-worker"
    folder.mkdir()
    # the worker shares nothing with the checkout: no REALSR_REPO, its own folder, only URLs
    env = {**session.env, "PWD": str(folder), "REALSR_GIT_URL": f"file://{git}"}
    worker = Worker("realsr-remote", folder, env, session.work / "remote-worker.log")
    try:
        yield Remote(git, folder, env, worker)
    finally:
        worker.stop()


def _remote_run(
    session: Session, remote: Remote, commit: str, *params: str
) -> tuple[subprocess.CompletedProcess, dict]:
    return session.deployment_run(
        "--job-variable",
        f"working_dir={remote.folder}",
        "--job-variable",
        "env=" + json.dumps({"REALSR_GIT_COMMIT": commit}),
        *params,
        name="grpo/remote",
    )


def _all_keys(sess: Session) -> dict[str, str]:
    client = sess.s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=DVC_BUCKET)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_remote_deployment_clones_pulls_runs_pushes_and_records(session: Session, committed: str, remote: Remote) -> None:
    # a new commit that changes the policy: only init_policy, the sft and grpo trained from it, their
    # evaluation (and the always-run stages) must run
    set_params(session.repo, {"policy.dropout": 0.1})
    session.run("git", "commit", "-qam", "policy dropout 0.1")
    commit = session.run("git", "rev-parse", "HEAD").stdout.strip()
    session.run("git", "push", "-q", str(remote.git), "HEAD:refs/heads/main")

    done, run = _remote_run(session, remote, commit)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:] + remote.worker.log.read_text()[-5000:]
    executed = session.stages_artifact(run["id"])
    assert {k for k, v in executed.items() if v} == {"ingest", "init_policy", "sft", "grpo", "evaluate", "publish"}, executed
    # a fresh clone of that commit in the worker's folder, one per run
    [clone] = remote.clones()
    assert clone.name == f"realsr-r1-{run['id']}"
    assert session.run("git", "-C", str(clone), "rev-parse", "HEAD").stdout.strip() == commit
    assert (clone / "models/policy_init").is_dir() and (clone / "data/shards").is_dir()  # pulled
    assert commit in session.artifact(run["id"], "grpo-run")
    keys = _all_keys(session)
    record = f"dvc/runs/{commit}/{run['id']}/"
    assert {record + f for f in ("run.json", "dvc.lock", "params.yaml", "metrics/tokenizer.json")} <= set(
        keys
    )

    # on the laptop: the commit is checked out; its run's lock, then its outputs
    assert (session.repo / "models/policy_init").exists()
    got = session.run("make", "run-outputs")
    assert f"run {run['id']} of {commit[:12]}" in got.stdout, got.stdout
    assert (session.repo / "dvc.lock").read_bytes() == (clone / "dvc.lock").read_bytes()
    status = session.run(sys.executable, "-m", "dvc", "status", "--json")
    assert json.loads(status.stdout or "{}") == ALWAYS_CHANGED, status.stdout  # outputs in place
    status = session.run(sys.executable, "-m", "dvc", "status", "--cloud", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout  # everything the run's lock names is pushed

    # a second run of the same commit computes nothing: it pulls, in a clone of its own
    done, again = _remote_run(session, remote, commit, "--param", "publish=false")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    executed = session.stages_artifact(again["id"])
    assert executed.pop("ingest") and not any(executed.values()), executed  # ingest always rescans
    assert len(remote.clones()) == 2
    runs = {k.split("/")[3] for k in _all_keys(session) if k.startswith(f"dvc/runs/{commit}/")}
    assert runs == {run["id"], again["id"]}  # two records, neither overwritten


def test_remote_run_with_s3_down_fails_in_one_line_and_writes_nothing(
    session: Session, committed: str, remote: Remote
) -> None:
    commit = session.run("git", "rev-parse", "HEAD").stdout.strip()
    before = _all_keys(session)
    session.relay.down()
    try:
        done, run = _remote_run(session, remote, commit)
    finally:
        session.relay.up()
    assert done.returncode == 1 and run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "\n" not in message and message.startswith("DVC remote 's3' (s3://realsr-dvc/dvc) unreachable"), (
        message
    )
    assert f"at {session.relay.url} ($AWS_ENDPOINT_URL)" in message, message
    assert "credentials from environment variables" in message, message
    assert _all_keys(session) == before
    assert session.api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}}) == []
