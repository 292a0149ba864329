"""What every stage shares: logging, params loading, and the exit-code convention.

A stage module defines `main(params) -> None` and ends with `run_stage(main)`: params are
validated first (a bad key exits 2 with one line), and any `UsageError` exits 2 the same way.
The process's CPU thread pools are pinned to `params.threads`, so a machine reproduces its own
float results bit for bit whatever its core count.
Before `main` runs, the temporaries a killed earlier run of the stage left beside its outputs
(the `outs` and `metrics` dvc.yaml lists for it) are removed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from realsr_r1.atomic import sweep_stale
from realsr_r1.config import Params, ParamsError, load_params

log = logging.getLogger("stages")


class UsageError(RuntimeError):
    """A problem with the inputs the user can fix; printed as one line, exit code 2."""


def stage_outputs(stage: str, dvc_yaml: str | Path = "dvc.yaml") -> list[Path]:
    """The paths dvc.yaml says `stage` writes (its `outs` and `metrics`); none without a dvc.yaml."""
    path = Path(dvc_yaml)
    if not path.is_file():
        return []
    spec = (yaml.safe_load(path.read_text()).get("stages") or {}).get(stage) or {}
    entries = [*spec.get("outs", []), *spec.get("metrics", [])]
    return [Path(next(iter(e)) if isinstance(e, dict) else e) for e in entries]


def _stage_name(main: Callable) -> str:
    """`synthesize` for the `main` of stages/synthesize.py, whether run with `-m` or imported."""
    module = main.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else Path(sys.argv[0]).stem
    return module.rsplit(".", 1)[-1]


def use_threads(count: int) -> None:
    """Pin torch's, OpenCV's and the BLAS/OpenMP thread pools to `count`: the number of threads
    decides how float reductions are split, hence the last bits of every trained weight."""
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    threadpool_limits(count)


def run_stage(main: Callable[[Params], None]) -> None:
    """Load `params.yaml` (or $REALSR_PARAMS), sweep stale temporaries, run `main`, map known errors to exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in sweep_stale(stage_outputs(_stage_name(main))):
        log.warning("removed %s, left by an interrupted earlier run", path)
    try:
        params = load_params(os.environ.get("REALSR_PARAMS", "params.yaml"))
        use_threads(params.threads)
        main(params)
    except (ParamsError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
