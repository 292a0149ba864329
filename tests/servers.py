"""Real servers on loopback for the tests: moto's S3 server, a TCP relay, a Prefect server.

Each picks a free port, waits until it answers, and stops what it started (by its own pid).
The relay sits in front of the S3 server so a test can take "S3" down and bring it back
while moto keeps its in-memory objects, which a restarted moto would lose.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: server not ready after {timeout}s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class MotoS3:
    """`moto_server` on a free loopback port; `env` points boto3, s3fs and DVC at it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "moto.log"
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_http(f"{self.url}/moto-api/", self.proc, 30, self.log)

    def client(self) -> Any:
        """A boto3 S3 client straight to the server (dummy credentials), for setting up and checking."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
        )

    def stop(self) -> None:
        _stop(self.proc)


def s3_env(endpoint: str) -> dict[str, str]:
    """What a client needs to talk to the test S3: endpoint and dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


class Relay:
    """A TCP relay on a fixed free port to a backend; `down()` refuses connections, `up()` restores."""

    def __init__(self, backend_port: int) -> None:
        self.backend = ("127.0.0.1", backend_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and cut every open connection, as a stopped server would."""
        if self._listener is not None:
            # shutdown first: close() alone leaves a socket blocked in accept() listening
            # until that accept returns, so the next client would still get through
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in list(self._conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.backend)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# the server streams runs' log lines to `prefect deployment run --watch` (off by default)
LOG_STREAM = {"PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true", "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true"}


class PrefectServer:
    """`prefect server start` on a free port with its own PREFECT_HOME and SQLite database."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.home = workdir / "prefect-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = workdir / "prefect-server.log"
        self.env = {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        env = {
            **os.environ,
            **self.env,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            **LOG_STREAM,
        }
        env.pop("PREFECT_API_URL")  # the server itself must not be its own client
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        _wait_http(f"{self.api_url}/health", self.proc, 90, self.log)

    def stop(self) -> None:
        _stop(self.proc)


class Worker:
    """`prefect worker start` for a process pool, run from `cwd` with `env`."""

    def __init__(self, pool: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
            cwd=cwd,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        _stop(self.proc)


GIT_ID = {
    "GIT_AUTHOR_NAME": "realsr",
    "GIT_AUTHOR_EMAIL": "realsr@localhost",
    "GIT_COMMITTER_NAME": "realsr",
    "GIT_COMMITTER_EMAIL": "realsr@localhost",
}


# params for a copy that runs the whole DAG in minutes: 17 photos x 2 crops x 1 degradation
# (synthesize.per_image 2 is then a change), two SFT and two GRPO steps with every evaluation and checkpoint
TINY_PIPELINE: dict[str, Any] = {
    "prepare.crops_per_image": 2,
    "synthesize.per_image": 1,
    "sft.steps": 2,
    "sft.batch_size": 4,
    "sft.eval_samples": 2,
    "sft.eval_interval": 1,
    "sft.early_eval_step": 1,
    "sft.checkpoint_interval": 1,
    "sft.workers": 0,
    "grpo.steps": 2,
    "grpo.prompts": 2,
    "grpo.eval_samples": 1,
    "grpo.checkpoint_interval": 1,
    "grpo.workers": 0,
    "evaluate.val_images": 3,
    "evaluate.sheets": 2,
    "rollout.group_size": 2,
    "rollout.max_text_tokens": 16,  # an untrained policy runs every text block to its cap: keep it short
}


def set_params(repo: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys (`sft.steps`) in `repo`/params.yaml; a key it lacks is an error, so a
    renamed param cannot leave a test running on the defaults unnoticed."""
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise KeyError(f"{path}: no key {dotted!r}")
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def copy_repo(src: Path, dst: Path, params: dict[str, Any] | None = None, exclude: tuple[str, ...] = ()) -> None:
    """Copy the files git would see (tracked + untracked, not ignored; none starting with an
    `exclude` prefix) and make `dst` a git repo whose first commit has `params` (dotted keys)
    set in params.yaml."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=src,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        path = src / rel
        if path.is_file() and not path.is_symlink() and not rel.startswith(exclude):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
    if params:
        set_params(dst, params)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy of the project"]):
        subprocess.run(["git", *args], cwd=dst, check=True, env={**os.environ, **GIT_ID})
