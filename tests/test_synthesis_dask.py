"""Synthesis on a Dask cluster: byte-identical shards, the stage's address sources, the flow's cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dask
import distributed
import pytest
import yaml

from flows.dvc import StageError, env_for_dvc
from flows.grpo import dask_cluster
from realsr_r1.config import DASK_ENV, DegradationParams, SynthesizeParams
from realsr_r1.data import synthesis
from realsr_r1.data.images import encode_png
from realsr_r1.data.synthesis import DaskClusterError, synthesize_split
from stages.synthesize import dask_address
from tests.helpers import REPO, tar_bytes
from tests.servers import free_port  # bound then released: nothing listens there


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two single-threaded worker processes on loopback, free ports, no dashboard."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0, dashboard_address=None
    ) as c:
        yield c


@pytest.mark.server
def test_dask_shards_are_byte_identical_to_local(
    cluster: distributed.LocalCluster, crops: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one crop per task: 12 tasks through a window of 4 futures, so results come back out of order
    monkeypatch.setattr(synthesis, "DASK_CHUNK", 1)
    p = DegradationParams()
    local = synthesize_split(crops, len(crops), tmp_path / "local", 3, p, 4, 0, 1, shard_size=10)
    dask = synthesize_split(
        crops, len(crops), tmp_path / "dask", 3, p, 4, 0, 1, shard_size=10, dask_address=cluster.scheduler_address
    )
    assert local == dask and dask["samples"] == 3 * len(crops)
    one, two = tar_bytes(tmp_path / "local"), tar_bytes(tmp_path / "dask")
    assert len(one) == 4 and one == two


def test_unreachable_scheduler_names_the_address(tmp_path: Path, crops: list) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(DaskClusterError, match=f"cannot reach the Dask scheduler at '{address}'"),
    ):
        synthesize_split(crops[:1], 1, tmp_path, 1, DegradationParams(), 4, 0, 1, 10, dask_address=address)


def test_the_param_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DASK_ENV, raising=False)
    assert dask_address("") == ("", "")
    monkeypatch.setenv(DASK_ENV, " tcp://10.0.0.5:8786 ")
    assert dask_address("") == ("tcp://10.0.0.5:8786", "$REALSR_DASK_ADDRESS")
    assert dask_address("tcp://10.0.0.9:8786") == ("tcp://10.0.0.9:8786", "synthesize.dask_address")


def test_dvc_tracks_every_synthesize_param_but_where_it_runs() -> None:
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["synthesize"]
    listed = {k.removeprefix("synthesize.") for k in stage["params"] if k.startswith("synthesize.")}
    assert "seed" in stage["params"] and "synthesize" not in stage["params"]
    assert listed == set(SynthesizeParams.model_fields) - {"workers", "dask_address"}


def write_prepared(repo: Path, crops: list) -> None:
    """data/prepared as the prepare stage writes it, and the repository's params."""
    prepared = repo / "data/prepared"
    records = []
    for crop in crops:
        (prepared / crop.split).mkdir(parents=True, exist_ok=True)
        (prepared / crop.split / f"{crop.key}.png").write_bytes(encode_png(crop.image))
        records.append({"key": crop.key, "split": crop.split, **crop.meta})
    (prepared / "crops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(per_image=2, shard_size=5, workers=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(repo: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != DASK_ENV}
    full |= {"PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s", **env}
    return subprocess.run(
        [sys.executable, "-m", "stages.synthesize"], cwd=repo, env=full, capture_output=True, text=True, check=False
    )


@pytest.mark.server
@pytest.mark.stage
def test_stage_runs_on_the_cluster_in_the_environment(
    cluster: distributed.LocalCluster, crops: list, tmp_path: Path
) -> None:
    local, remote = tmp_path / "local", tmp_path / "dask"
    for repo in (local, remote):
        write_prepared(repo, crops)
    run = run_stage(local)
    assert run.returncode == 0, run.stderr
    assert "running on local processes" in run.stderr
    run = run_stage(remote, REALSR_DASK_ADDRESS=cluster.scheduler_address)
    assert run.returncode == 0, run.stderr
    assert f"Dask cluster at {cluster.scheduler_address} (from $REALSR_DASK_ADDRESS)" in run.stderr
    assert tar_bytes(local / "data/shards") == tar_bytes(remote / "data/shards") != {}
    assert (local / "metrics/synthesize.json").read_bytes() == (remote / "metrics/synthesize.json").read_bytes()

    address = f"tcp://127.0.0.1:{free_port()}"
    bad = run_stage(tmp_path / "local", REALSR_DASK_ADDRESS=address)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: $REALSR_DASK_ADDRESS: cannot reach the Dask scheduler at '{address}'")
    assert tar_bytes(local / "data/shards") == tar_bytes(remote / "data/shards")  # the failed run left the outputs alone


@pytest.mark.server
def test_flow_brings_up_a_cluster_for_the_run_and_hands_its_address_to_the_stages() -> None:
    with dask_cluster(None) as env:
        assert env == {}
    spec = {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": 1, "processes": False, "protocol": "tcp", "host": "127.0.0.1", "scheduler_port": 0,
            "dashboard_address": ":0",
        },
    }
    with dask_cluster(spec) as env:
        address = env[DASK_ENV]
        assert address.startswith("tcp://127.0.0.1:")
        assert env_for_dvc(env)[DASK_ENV] == address  # what `dvc repro` and so the stage subprocess get
        with distributed.Client(address, set_as_default=False) as client:
            assert client.submit(sum, [1, 2], pure=False).result() == 3
        with dask_cluster({"address": address}) as same:  # an existing scheduler is connected to, as is
            assert same == env
    # the cluster is gone with the run
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(OSError):
        distributed.Client(address, set_as_default=False)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"adress": "tcp://h:8786"}, "dask: unknown key(s) adress"),
        ({"address": "tcp://h:8786", "cluster_class": "distributed.LocalCluster"}, "dask: Cannot specify `address`"),
        ({"cluster_class": "distributed.NoSuchCluster"}, "dask:"),
        pytest.param(  # an in-process cluster, its dashboard listening: a server
            {"cluster_kwargs": {"n_workers": 1, "processes": False, "dashboard_address": ":0"}},
            "dask: the scheduler inproc://",
            marks=pytest.mark.server,
        ),
    ],
)
def test_flow_rejects_a_bad_dask_parameter(spec: dict, message: str) -> None:
    with pytest.raises(StageError) as err, dask_cluster(spec):
        pass
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_flow_names_an_unreachable_scheduler() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(StageError, match=f"cannot reach the Dask scheduler at '{address}'"),
        dask_cluster({"address": address}),
    ):
        pass
