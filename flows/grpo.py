"""Flow `grpo`: the stages of dvc.yaml in DAG order, one Prefect task each.

A task pulls what its stage needs from the DVC remote (only when something is missing here,
e.g. on a fresh worker), runs `dvc repro --single-item STAGE` (DVC's cache decides whether the
stage really runs), pushes the stage's outputs, logs DVC's output line by line and attaches
the stage's metrics (and image plots such as the evaluation's comparison sheet) as Prefect
artifacts. Storage and network failures are retried with exponential back-off; anything else
fails at once, and its one-line reason is the failed run's state message (and its last log
line). Param overrides run as a DVC experiment (`dvc exp run -S`), listed by `dvc exp show`;
afterwards the checkout is put back as it was (params.yaml, dvc.lock, metrics and the outputs
DVC tracks), so an experiment never changes what later runs and commits start from.
`publish=True` always runs the `publish` stage: where a release goes (the bucket) is not
one of its DVC inputs, and it is cheap when the release already exists.
Runs in one checkout queue: a global concurrency limit of one slot, named after the checkout,
is held for the run (DVC locks the checkout while a command runs, so a second run there would
fail with "'data/prepared' is busy"; it waits instead). With `record=True` (the `grpo/remote`
deployment, which clones the code) the run first checks the DVC remote answers, then writes its
commit and the dvc.lock it produced under the remote's `runs/COMMIT/RUN_ID/` (flows/runs.py); a
`grpo-run` artifact names the commit and shows the lock in every case.
With the `dask` parameter the run brings up (or connects to) a Dask cluster through
prefect-dask for its duration and hands the scheduler to the stages in $REALSR_DASK_ADDRESS
(synthesis fans out over it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import flow_run as current_flow_run
from prefect.runtime import task_run as current_task_run
from prefect.states import Failed, State
from prefect.tasks import Task, exponential_backoff
from prefect_dask import DaskTaskRunner

from flows.dag import DagError, Stage, read_stages, select, upstream
from flows.dvc import StageError, TransientStageError, check, first_error, run_dvc
from flows.ledger import already_pushed, record_push
from flows.runs import apply_latest_record, check_reachable, dvc_remote, git, record_run
from realsr_r1.atomic import write_bytes
from realsr_r1.config import DASK_ENV, ParamsError
from realsr_r1.errors import first_line
from realsr_r1.presets import set_args, validate

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
MAX_INLINE_IMAGE = 2 * 1024 * 1024  # bytes; larger images are referenced by path instead
DASK_KEYS = {"address", "cluster_class", "cluster_kwargs", "adapt_kwargs"}


def _transient_only(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry storage/network failures only; a deterministic failure fails at once."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(exc, TransientStageError)


def _missing(repo: Path, stage: Stage) -> list[str]:
    return [p for p in (*stage.deps, *stage.outs) if not (repo / p).exists()]


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [row for k, v in node.items() for row in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(node, float):
        return [(prefix, f"{node:.6g}")]
    if isinstance(node, (int, str, bool)):
        return [(prefix, str(node))]
    return []


def metrics_markdown(repo: Path, stage: Stage) -> str | None:
    """A Markdown table of every metric the stage wrote (None when it wrote none)."""
    rows: list[str] = []
    for rel in stage.metrics:
        path = repo / rel
        if not path.is_file():
            continue
        try:
            data = (
                json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            )
        except (json.JSONDecodeError, yaml.YAMLError):
            continue
        rows += [f"| {rel} | {key} | {value} |" for key, value in _flatten(data)]
    if not rows:
        return None
    return "\n".join(
        [f"### Metrics of stage `{stage.name}`", "", "| file | metric | value |", "|---|---|---|", *rows]
    )


def image_markdown(repo: Path, stage: Stage) -> list[tuple[str, str]]:
    """Image plots of the stage (e.g. the evaluation's comparison sheet) as Markdown, inlined."""
    found: list[Path] = []
    for rel in stage.plots:
        path = repo / rel
        found += (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if path.is_dir()
            else ([path] if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() else [])
        )
    out: list[tuple[str, str]] = []
    for img in found:
        rel = img.relative_to(repo).as_posix()
        if img.stat().st_size <= MAX_INLINE_IMAGE:
            mime = "jpeg" if img.suffix.lower() in {".jpg", ".jpeg"} else img.suffix.lower().lstrip(".")
            data = base64.b64encode(img.read_bytes()).decode()
            out.append((rel, f"### {rel}\n\n![{rel}](data:image/{mime};base64,{data})\n"))
        else:
            out.append((rel, f"### {rel}\n\n{img.stat().st_size} bytes: too large to inline; see `{rel}`.\n"))
    return out


def _artifact_key(*parts: str) -> str:
    key = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in key).strip("-")[:100]


@task(name="stage", task_run_name="{stage.name}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(
    stage: Stage,
    repo: str,
    force: bool,
    push: bool,
    remote: str | None,
    set_params: list[str],
    known_unchanged: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Pull what is missing, reproduce one stage, push its outputs; report whether it ran.

    `known_unchanged`: the flow's `dvc status` found this stage and all its upstream stages
    up to date, so asking `dvc repro` again could only print "didn't change, skipping".
    `env`: variables added to the stage's environment (the run's Dask scheduler).
    """
    log = get_run_logger()
    root = Path(repo)
    attempt = f"attempt {current_task_run.run_count}"
    remote_args = ["-r", remote] if remote else []
    executed = False
    try:
        missing = _missing(root, stage)
        if missing:
            log.info("missing here: %s; pulling from the DVC remote", ", ".join(missing))
            check(
                run_dvc(["pull", "--allow-missing", "--with-deps", *remote_args, stage.name], root, log),
                f"pull for stage {stage.name}",
                transient_by_default=True,
            )
        if known_unchanged and not missing and not force:
            log.info("dvc status: stage %s and its inputs are unchanged", stage.name)
        else:
            if set_params:
                args = [
                    "exp",
                    "run",
                    "--single-item",
                    *(["--force"] if force else []),
                    *[a for kv in set_params for a in ("-S", kv)],
                    stage.name,
                ]
            else:
                args = ["repro", "--single-item", *(["--force"] if force else []), stage.name]
            done = check(run_dvc(args, root, log, env), f"stage {stage.name}", transient_by_default=False)
            executed = f"Running stage '{stage.name}'" in done.output
        if push and already_pushed(root, remote, stage.name):
            log.info("outputs of %s already pushed to this remote (unchanged since)", stage.name)
        elif push:
            check(
                run_dvc(["push", *remote_args, stage.name], root, log),
                f"push of stage {stage.name}",
                transient_by_default=True,
            )
            record_push(root, remote, stage.name)
    except TransientStageError as err:
        raise TransientStageError(f"{err} ({attempt})") from None
    table = metrics_markdown(root, stage)
    if table:
        create_markdown_artifact(
            table, key=_artifact_key(stage.name, "metrics"), description=f"metrics of stage {stage.name}"
        )
    for rel, md in image_markdown(root, stage):
        create_markdown_artifact(
            md, key=_artifact_key(stage.name, Path(rel).stem), description=f"{rel} from stage {stage.name}"
        )
    log.info("stage %s %s", stage.name, "ran" if executed else "was up to date (not re-executed)")
    return {"stage": stage.name, "executed": executed, "pushed": push}


def _set_params(repo: Path, overrides: dict[str, Any]) -> list[str]:
    """Validate `{"grpo.beta": 0.04}`-style overrides against the schema; render them for `dvc -S`."""
    validate(repo / "params.yaml", overrides)  # ParamsError names the bad key
    return set_args(overrides)


@contextmanager
def dask_cluster(spec: dict[str, Any] | None) -> Iterator[dict[str, str]]:
    """The stages' extra environment for the run: {} without `spec`; with it, the scheduler of a
    Dask cluster in $REALSR_DASK_ADDRESS, up for the duration of the `with`.

    prefect-dask's DaskTaskRunner does the cluster's life cycle: `{"address": "tcp://h:8786"}`
    connects to a running scheduler; `{"cluster_class": "distributed.LocalCluster",
    "cluster_kwargs": {...}}` (any class such as dask_jobqueue.SLURMCluster) starts a cluster
    and closes it afterwards. The stages run as `dvc` subprocesses, not as Dask tasks, so the
    flow keeps its own task runner and only hands them the scheduler address.
    """
    if not spec:
        yield {}
        return
    unknown = sorted(set(spec) - DASK_KEYS)
    if unknown:
        raise StageError(
            f"dask: unknown key(s) {', '.join(unknown)} (expected: {', '.join(sorted(DASK_KEYS))})"
        )
    try:
        runner = DaskTaskRunner(**spec)
    except (ValueError, TypeError, ImportError, AttributeError) as err:  # conflicting keys, no such class
        raise StageError(f"dask: {first_line(err)}") from None
    with runner:
        try:
            address = runner.client.scheduler.address
        except OSError as err:  # refused or timed out
            where = spec.get("address")
            raise StageError(f"dask: cannot reach the Dask scheduler at {where!r}: {first_line(err)}") from None
        except RuntimeError as err:  # the cluster class failed to start (prefect-dask logged why)
            raise StageError(f"dask: {spec.get('cluster_class')} did not start: {first_line(err)}") from None
        if address.startswith("inproc://"):
            raise StageError(
                f"dask: the scheduler {address} lives inside the flow's process, which the stages' "
                "subprocesses cannot reach: give cluster_kwargs processes=true or protocol 'tcp'"
            )
        yield {DASK_ENV: address}


def _changed_stages(root: Path, log: Any) -> set[str] | None:
    """Stages `dvc status` reports changed (None when it cannot tell: every stage asks DVC itself)."""
    done = run_dvc(["status", "--json"], root, log)
    try:
        return set(json.loads(done.output.splitlines()[-1])) if done.returncode == 0 else None
    except (json.JSONDecodeError, IndexError):
        return None


def run_files(plan: list[Stage]) -> set[str]:
    """The files git keeps that a run rewrites: params (experiments), dvc.lock, metrics, plots."""
    return {"params.yaml", "dvc.lock", *(p for s in plan for p in (*s.metrics, *s.plots))}


@contextmanager
def experiment(root: Path, plan: list[Stage], log: Any) -> Iterator[None]:
    """Put the checkout back as it was after the `with`: the files `dvc exp run -S` rewrites
    (params.yaml, dvc.lock, the stages' metrics and plots) byte for byte, then DVC's outputs
    by `dvc checkout` against the restored dvc.lock. The experiment stays in `dvc exp show`."""
    paths = run_files(plan)
    before = {p: (root / p).read_bytes() if (root / p).is_file() else None for p in paths}
    try:
        yield
    finally:
        for rel, data in before.items():
            if data is None:
                (root / rel).unlink(missing_ok=True)
            elif not (root / rel).is_file() or (root / rel).read_bytes() != data:
                write_bytes(root / rel, data)
        done = run_dvc(["checkout"], root, log)
        if done.returncode == 0:
            log.info("checkout restored; the experiment's results are listed by `dvc exp show`")
        else:  # e.g. a fresh worker never had the committed outputs: `dvc pull` fetches them
            log.warning("restoring the outputs: %s (`dvc pull` fetches them)", first_error(done.output))


@contextmanager
def one_run_per_checkout(root: Path, log: Any) -> Iterator[None]:
    """Hold the checkout's slot (a global concurrency limit of 1, created on first use) for the
    `with`: a second run in the same checkout waits here instead of failing on DVC's lock."""
    name = "checkout-" + hashlib.sha256(str(root).encode()).hexdigest()[:16]
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run created it first
                pass
    log.info("taking the checkout %s (concurrency limit %s; waits while another run works there)", root, name)
    with concurrency(name, occupy=1, strict=True):
        yield


def run_markdown(meta: dict[str, Any], lock: bytes | None, where: str | None) -> str:
    """The `grpo-run` artifact: the commit, where the record is, how to get the outputs."""
    lines = [f"### Run of commit `{meta['commit']}`", ""]
    if meta.get("dirty"):
        lines += ["The checkout had uncommitted changes: the commit alone does not reproduce it.", ""]
    if where:
        lines += [
            f"Recorded at `{where}` (dvc.lock, params, metrics). Its outputs on a laptop:",
            "",
            "```bash",
            f"git checkout {meta['commit']}",
            "make run-outputs      # python -m flows.runs fetch && dvc pull",
            "```",
            "",
        ]
    body = lock.decode() if lock else "(no dvc.lock)"
    return "\n".join([*lines, "dvc.lock this run produced:", "", f"```yaml\n{body}```"])


@flow(name="grpo")
def grpo(
    stages: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    push: bool = True,
    publish: bool = False,
    force: list[str] | None = None,
    remote: str | None = None,
    retries: int = 2,
    retry_delay_s: float = 5.0,
    repo: str | None = None,
    dask: dict[str, Any] | None = None,
    record: bool = False,
) -> dict[str, bool] | State:
    """Run the DVC pipeline stage by stage.

    stages: names from dvc.yaml (default all, in DAG order); overrides: dotted params keys ->
    values, run as a DVC experiment (the checkout is put back afterwards); push: push each
    stage's outputs to the DVC remote; publish: run the `publish` stage, always (it uploads a
    release when a bucket is set and its gate agrees);
    force: stages to re-run even if unchanged (the nightly run forces `ingest` to rescan the
    photo source); remote: a DVC remote name (default: the configured default); retries and
    retry_delay_s: back-off for storage/network failures; repo: the checkout (default:
    $REALSR_REPO or the working directory); dask: a Dask cluster for the run (see
    `dask_cluster`), whose scheduler the stages get in $REALSR_DASK_ADDRESS; record: check the
    DVC remote answers before any stage, and keep the run's commit and dvc.lock on it.
    """
    log = get_run_logger()
    try:
        root = Path(repo or os.environ.get("REALSR_REPO") or Path.cwd()).resolve()
        with one_run_per_checkout(root, log):
            return _run(
                log,
                stages,
                overrides,
                push,
                publish,
                force,
                remote,
                retries,
                retry_delay_s,
                root,
                dask,
                record,
            )
    except StageError as err:
        # the reason as the state's message (the UI) and a log line (`--watch` streams logs)
        log.error("failed: %s", err)
        return Failed(message=str(err))


def _run(
    log: Any,
    stages: list[str] | None,
    overrides: dict[str, Any] | None,
    push: bool,
    publish: bool,
    force: list[str] | None,
    remote: str | None,
    retries: int,
    retry_delay_s: float,
    root: Path,
    dask: dict[str, Any] | None,
    record: bool,
) -> dict[str, bool]:
    """The flow's body; a StageError carries the one-line reason the run failed."""
    started = datetime.now(UTC).isoformat()
    commit, dirty = _commit(root)
    store = dvc_remote(root, remote) if record else None
    if store is not None:
        if dirty:
            raise StageError(
                f"{root}: uncommitted changes, but a run record names a commit: commit them first"
            )
        check_reachable(store)  # before anything is written anywhere
        prior = apply_latest_record(root, store, commit, plain_only=True)
        if prior is not None:
            log.info("commit %s already ran (run %s): starting from its dvc.lock", commit[:12], prior["flow_run_id"])
    try:
        plan = select(read_stages(root / "dvc.yaml"), stages, set() if publish else {"publish"})
        set_params = _set_params(root, overrides or {})
    except (DagError, ParamsError) as err:
        raise StageError(str(err)) from None
    unknown = set(force or []) - {s.name for s in plan}
    if unknown:
        raise StageError(f"force: stage(s) {', '.join(sorted(unknown))} not in this run's plan")
    # the release follows its destination, which DVC does not see: publish always runs
    forced = set(force or []) | ({"publish"} if publish else set())
    log.info("plan: %s (repo %s)", " -> ".join(s.name for s in plan), root)
    step = run_stage.with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay_s) if retries else 0,
        retry_condition_fn=_transient_only,
    )
    changed = None if set_params else _changed_stages(root, log)
    ups = upstream(read_stages(root / "dvc.yaml"))
    results: dict[str, bool] = {}
    with experiment(root, plan, log) if set_params else nullcontext(), dask_cluster(dask) as env:
        if env:
            log.info("Dask scheduler for this run: %s (in $%s)", env[DASK_ENV], DASK_ENV)
        for stage in plan:
            unchanged = (
                changed is not None
                and stage.name not in changed
                and not any(results.get(u) or u in forced for u in ups[stage.name])
            )
            out = step(stage, str(root), stage.name in forced, push, remote, set_params, unchanged, env)
            results[stage.name] = out["executed"]
        # what this run produced, read before an experiment puts the checkout back
        produced = {
            rel: (root / rel).read_bytes() for rel in sorted(run_files(plan)) if (root / rel).is_file()
        }
    create_table_artifact(
        [{"stage": k, "executed": v, "pushed": push} for k, v in results.items()],
        key="grpo-stages",
        description="which stages ran (DVC's cache skips unchanged ones)",
    )
    meta = {
        "commit": commit,
        "dirty": dirty,
        "flow_run_id": current_flow_run.get_id() or "local",
        "flow_run_name": current_flow_run.get_name(),
        "started": started,
        "finished": datetime.now(UTC).isoformat(),
        "stages": results,
        "requested": {"stages": stages, "overrides": overrides or {}},
    }
    where = record_run(store, meta["flow_run_id"], produced, meta) if store is not None else None
    if where:
        log.info("run recorded at %s (commit %s)", where, commit)
    create_markdown_artifact(
        run_markdown(meta, produced.get("dvc.lock"), where),
        key="grpo-run",
        description=f"commit {commit[:12]} and the dvc.lock this run produced",
    )
    return results


def _commit(root: Path) -> tuple[str, bool]:
    """HEAD's commit and whether tracked files differ from it (a record must name a real state)."""
    try:
        return git(root, "rev-parse", "HEAD"), bool(
            git(root, "status", "--porcelain", "--untracked-files=no")
        )
    except StageError:
        return "(not a git checkout)", True
