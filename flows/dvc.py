"""DVC as a subprocess: run a command, stream its output to a logger, classify its failure.

A failure is *transient* (worth a retry with back-off) when the output shows the storage or
the network failing; anything else (a stage exiting on bad params, a broken command) is
deterministic and fails at once, since retrying would only repeat it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TRANSIENT = re.compile(
    r"could not connect|connection (refused|reset|aborted)|connect timeout|read timeout|timed out"
    r"|endpointconnectionerror|temporarily unavailable|name or service not known|broken pipe"
    r"|(http|status)\D{0,20}50[0234]\b|slowdown|service ?unavailable|internalerror|requesttimeout"
    r"|failed to (push|pull|fetch|download|upload)|failed to connect",
    re.IGNORECASE,
)
_ERROR_LINE = re.compile(r"^(ERROR|error)\b.*")


class StageError(RuntimeError):
    """A deterministic failure: retrying cannot help (bad params, a bug, a missing input)."""


class TransientStageError(StageError):
    """Storage or network failed: retried with back-off, then reported with this message."""


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    output: str


def env_for_dvc(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This interpreter's bin first on PATH, so `python -m stages.X` in dvc.yaml is the same Python;
    `extra` adds variables the stages read (e.g. the Dask scheduler of the run)."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), **(extra or {})}


def run_dvc(
    args: list[str], cwd: Path, log: logging.Logger | logging.LoggerAdapter, env: dict[str, str] | None = None
) -> Result:
    """Run `dvc ARGS` in `cwd` (with `env` added to the environment), logging each output line as it comes."""
    cmd = [sys.executable, "-m", "dvc", *args]
    log.info("$ dvc %s", " ".join(args))
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env_for_dvc(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            log.info("%s", line)
    return Result(args, proc.wait(), "\n".join(lines))


def first_error(output: str) -> str:
    """The most telling line of a failure: DVC's first `ERROR:` line, else the last line."""
    for line in output.splitlines():
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    tail = [ln for ln in output.splitlines() if ln.strip()]
    return tail[-1].strip() if tail else "(no output)"


def check(result: Result, what: str, transient_by_default: bool) -> Result:
    """Raise the right error class for a failed command, with a one-line message."""
    if result.returncode == 0:
        return result
    complaints = "\n".join(
        ln for ln in result.output.splitlines() if re.search(r"error|exception|fail", ln, re.IGNORECASE)
    )
    transient = bool(TRANSIENT.search(complaints)) or (
        transient_by_default and "config" not in first_error(result.output).lower()
    )
    message = f"{what} failed (dvc exit {result.returncode}): {first_error(result.output)}"
    raise (TransientStageError if transient else StageError)(message)
