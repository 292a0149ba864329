"""What every stage shares: logging, params loading, and the exit-code convention.

A stage module defines `main(params) -> None` and ends with `run_stage(main)`: params are
validated first (a bad key exits 2 with one line), and any `UsageError` exits 2 the same way.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from realsr_r1.config import Params, ParamsError, load_params

log = logging.getLogger("stages")


class UsageError(RuntimeError):
    """A problem with the inputs the user can fix; printed as one line, exit code 2."""


def run_stage(main: Callable[[Params], None]) -> None:
    """Load `params.yaml` (or $REALSR_PARAMS), run `main`, map known errors to exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(os.environ.get("REALSR_PARAMS", "params.yaml"))
        main(params)
    except (ParamsError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
