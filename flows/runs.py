"""Run records: which commit a run built and the `dvc.lock` it produced, kept on the DVC remote.

A worker on another machine shares only the git server and the object store with whoever
submitted the run, so the record goes where the outputs went: under the DVC remote, at
`runs/COMMIT/FLOW_RUN_ID/` (dvc.lock, params.yaml, the metrics files, then `run.json` last,
so a record without it is unfinished and ignored). Keys are per commit and per run: no run
overwrites another's. `python -m flows.runs fetch` (`make run-outputs`) puts the newest
complete record of HEAD's commit into a checkout; `dvc pull` then fetches its outputs.
Also here: the check that the remote answers before a run starts, naming the URL, the
endpoint and where the credentials came from. Nothing here imports Prefect.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.dvc import StageError
from realsr_r1.atomic import write_bytes

RUNS = "runs"
MARKER = "run.json"
_CRED_METHODS = {
    "env": "environment variables ($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY)",
    "shared-credentials-file": "~/.aws/credentials ($AWS_SHARED_CREDENTIALS_FILE)",
    "config-file": "~/.aws/config ($AWS_CONFIG_FILE)",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's IAM role",
    "assume-role-with-web-identity": "a web identity token ($AWS_WEB_IDENTITY_TOKEN_FILE)",
}


@dataclass(frozen=True)
class Remote:
    """A DVC remote as the checkout's config resolves it (config.local included)."""

    name: str
    url: str
    config: dict[str, Any]
    fs: Any  # fsspec filesystem DVC uses for it
    path: str  # the remote's root in `fs`

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])


def dvc_remote(root: Path, name: str | None = None) -> Remote:
    """The named remote, or the default one, from `dvc config --list` (config.local included);
    DVC runs as a subprocess: the flow's folder has its own `dvc` module, which shadows DVC's."""
    import sys

    import fsspec

    done = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--list"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StageError(f"{root}: dvc config --list failed: {done.stderr.strip()}")
    conf = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    name = name or conf.get("core.remote")
    prefix = f"remote.{name}."
    config = {k.removeprefix(prefix): v for k, v in conf.items() if k.startswith(prefix)}
    if not name or "url" not in config:
        known = sorted({k.split(".")[1] for k in conf if k.startswith("remote.")}) or ["none"]
        raise StageError(
            f"{root}/.dvc: no DVC remote {name or '(default)'!r} (configured: {', '.join(known)})"
        )
    url = config["url"]
    if "://" not in url:  # a local folder, relative to .dvc/
        url = str((root / ".dvc" / url).resolve())
    options = {"client_kwargs": {"endpoint_url": config["endpointurl"]}} if config.get("endpointurl") else {}
    if config.get("profile"):
        options["profile"] = config["profile"]
    fs, path = fsspec.core.url_to_fs(url, **options)
    return Remote(name, url, config, fs, path)


def _credentials_source(config: dict[str, Any]) -> str:
    if config.get("access_key_id"):
        return "access_key_id in the DVC remote's config"
    if config.get("profile"):
        return f"AWS profile {config['profile']!r} (DVC remote config)"
    import boto3

    creds = boto3.Session().get_credentials()
    if creds is None:
        return "none found (environment, ~/.aws, instance role)"
    return _CRED_METHODS.get(creds.method, creds.method)


def check_reachable(remote: Remote) -> None:
    """Fail at once, in one line, when an S3 remote does not answer: before any stage runs,
    so a run that cannot store its outputs writes nothing anywhere."""
    if not remote.url.startswith("s3://"):
        return  # a local folder: `dvc push` creates it
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = remote.config.get("endpointurl")
    where = (
        f"{endpoint} (endpointurl in the DVC remote's config)"
        if endpoint
        else f"{os.environ['AWS_ENDPOINT_URL']} ($AWS_ENDPOINT_URL)"
        if os.environ.get("AWS_ENDPOINT_URL")
        else "AWS's default S3 endpoint"
    )
    bucket = remote.url.removeprefix("s3://").split("/", 1)[0]
    cfg = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    try:
        session = boto3.Session(profile_name=remote.config.get("profile"))
        session.client("s3", endpoint_url=endpoint, config=cfg).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as err:
        reason = " ".join(str(err).split())
        raise StageError(
            f"DVC remote {remote.name!r} ({remote.url}) unreachable at {where}, "
            f"credentials from {_credentials_source(remote.config)}: {reason}"
        ) from None


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StageError(f"{root}: git {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def record_run(remote: Remote, run_id: str, files: dict[str, bytes], meta: dict[str, Any]) -> str:
    """Write the run's files under runs/COMMIT/RUN_ID/ on the remote, `run.json` last; return its URL."""
    from botocore.exceptions import BotoCoreError, ClientError

    base = remote.join(RUNS, meta["commit"], run_id)
    url = f"{remote.url.rstrip('/')}/{RUNS}/{meta['commit']}/{run_id}/"
    try:
        for rel, data in sorted(files.items()):
            remote.fs.makedirs(os.path.dirname(f"{base}/{rel}"), exist_ok=True)
            remote.fs.pipe_file(f"{base}/{rel}", data)
        remote.fs.pipe_file(
            f"{base}/{MARKER}", json.dumps({**meta, "files": sorted(files)}, indent=2).encode()
        )
    except (OSError, BotoCoreError, ClientError) as err:
        raise StageError(f"recording the run at {url} failed: {' '.join(str(err).split())}") from None
    return url


def latest_record(remote: Remote, commit: str, plain_only: bool = False) -> dict[str, Any] | None:
    """The newest complete record of `commit` (its run.json, plus `base`), or None; with
    `plain_only`, of runs without param overrides (whose params are the commit's own)."""
    found = []
    for marker in remote.fs.glob(remote.join(RUNS, commit, "*", MARKER)):
        meta = json.loads(remote.fs.cat_file(marker))
        if not (plain_only and meta.get("requested", {}).get("overrides")):
            found.append({**meta, "base": marker.rsplit("/", 1)[0]})
    return max(found, key=lambda m: m["finished"], default=None)


def apply_latest_record(
    root: Path, remote: Remote, commit: str, plain_only: bool = False
) -> dict[str, Any] | None:
    """Write the newest finished run of `commit` (dvc.lock, params, metrics) into `root`.

    A laptop does it before `dvc pull`; a remote run does it before planning, so a second run of
    a commit pulls what the first computed instead of computing it again. None: no such run."""
    meta = latest_record(remote, commit, plain_only)
    for rel in meta["files"] if meta else ():
        write_bytes(root / rel, remote.fs.cat_file(f"{meta['base']}/{rel}"))
    return meta


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.callback()
def main() -> None:
    """Run records on the DVC remote."""


@app.command()
def fetch(
    commit: Annotated[str, typer.Argument(help="the commit the remote run built")] = "HEAD",
    remote_name: Annotated[
        str | None, typer.Option("--remote", "-r", help="DVC remote (default: the default)")
    ] = None,
    repo: Annotated[Path, typer.Option(help="the checkout")] = Path("."),
) -> None:
    """Put the newest recorded run of COMMIT (dvc.lock, params, metrics) into the checkout; then `dvc pull`."""
    try:
        root = repo.resolve()
        head = git(root, "rev-parse", "HEAD")
        sha = git(root, "rev-parse", "--verify", f"{commit}^{{commit}}")
        if sha != head:
            raise StageError(f"HEAD is {head[:12]}, not {sha[:12]}: `git checkout {sha[:12]}` first")
        remote = dvc_remote(root, remote_name)
        meta = apply_latest_record(root, remote, sha)
        if meta is None:
            raise StageError(
                f"no finished run of {sha[:12]} recorded under {remote.url.rstrip('/')}/{RUNS}/{sha}/"
            )
    except StageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"run {meta['flow_run_id']} of {sha[:12]}: wrote {', '.join(meta['files'])}; now `dvc pull`")


if __name__ == "__main__":
    app()
