"""Orchestration overhead: `prefect deployment run grpo/full` vs `dvc repro`, everything cached.

In a temporary copy of this repository on tiny params (`TINY_PIPELINE`: small data, two SFT
steps, so filling the caches takes minutes): a Prefect server (own SQLite), a process work pool and
worker, `prefect deploy --all`; one real `dvc repro` and one flow run fill the caches and the
DVC remote (the local default). Then both are timed on the cached pipeline (median of --repeat
runs) and the difference is printed against the budget of 15 s.

    .venv/bin/python bench/flow.py [--repeat 3] [--query-seconds 1]

--query-seconds is the worker's polling interval (PREFECT_WORKER_QUERY_SECONDS, Prefect's
default is 10 s): a run waits up to that long for a worker to pick it up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import GIT_ID, TINY_PIPELINE, copy_repo
from tests.servers import BIN, PrefectServer, Worker

BUDGET_S = 15.0


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--query-seconds", type=float, default=1.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
        work = Path(tmp)
        repo = work / "repo"
        repo.mkdir()
        copy_repo(ROOT, repo, TINY_PIPELINE)
        server = PrefectServer(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REALSR_", "PYTHONPATH"))}
        env.update(server.env)
        env.update(GIT_ID)
        env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                "PWD": str(repo),
                "PREFECT_WORKER_QUERY_SECONDS": str(args.query_seconds),
            }
        )
        prefect, dvc = str(BIN / "prefect"), [sys.executable, "-m", "dvc"]
        worker = None
        try:
            timed([prefect, "work-pool", "create", "realsr-gpu", "--type", "process"], repo, env)
            timed([prefect, "--no-prompt", "deploy", "--all"], repo, env)
            worker = Worker("realsr-gpu", repo, env, work / "worker.log")
            run = [prefect, "deployment", "run", "grpo/full", "--watch"]
            fill = timed([*dvc, "repro"], repo, env)
            fill_flow = timed(run, repo, env)  # pushes everything to the DVC remote once
            print(f"fill: dvc repro {fill:.1f} s (pipeline computed), flow {fill_flow:.1f} s (push)")
            repro = [timed([*dvc, "repro"], repo, env) for _ in range(args.repeat)]
            flow = [timed(run, repo, env) for _ in range(args.repeat)]
        finally:
            if worker is not None:
                worker.stop()
            server.stop()

    r, f = statistics.median(repro), statistics.median(flow)
    print(f"dvc repro, cached:                       median {r:6.2f} s  runs {[round(x, 2) for x in repro]}")
    print(f"prefect deployment run grpo/full, cached: median {f:6.2f} s  runs {[round(x, 2) for x in flow]}")
    print(
        f"orchestration overhead: {f - r:+.2f} s ({f / r:.1f}x dvc repro); budget +{BUDGET_S:.0f} s: "
        f"{'within' if f - r <= BUDGET_S else 'OVER'}  (worker polls every {args.query_seconds:g} s)"
    )


if __name__ == "__main__":
    main()
