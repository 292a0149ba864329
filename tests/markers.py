"""The test tiers' markers, enforced: a test that starts a server, a stage or training ranks
without the marker saying so fails with one line naming the marker to add.

    server       it starts a server: a process (moto S3, Prefect, SeaweedFS, Dask, uvicorn...)
                 or, in the test process itself, anything listening on a TCP port (Dask
                 scheduler, the S3 relay...)
    stage        it runs a pipeline stage (`python -m stages.X`) or DVC as a subprocess
    distributed  it starts DeepSpeed / torchrun ranks

`make test-fast` runs the tests with none of them. The check is about who starts: a module or
session fixture that starts a server belongs to the test whose set-up ran it, and later tests
that reuse it need no marker. conftest.py records each test's markers before its fixtures are
set up (`begin`) and turns recorded violations into the failure (`take_violations`).

How: every process spawn goes through `_posixsubprocess.fork_exec` (subprocess, multiprocessing)
or `os.posix_spawn`; `install` wraps them and `socket.socket.listen`. A spawn also hands the
test's id and markers to the child in the environment, with markers_site/ on PYTHONPATH: its
`sitecustomize` installs the same spawn check there (no listen check), so a stage that relaunches
itself under `deepspeed` is caught too. A child records what it refused in the log file named
by the environment, where the test process picks it up.

No pytest import here: children load this file by path.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence

MARKERS = ("server", "stage", "distributed")  # registered in pyproject.toml
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "markers_site")
ENV_TEST, ENV_MARKS, ENV_LOG = "PYTEST_MARKERS_TEST", "PYTEST_MARKERS_ALLOWED", "PYTEST_MARKERS_LOG"

SERVER_PROGRAMS = {"moto_server", "weed", "minio", "uvicorn", "dask", "dask-scheduler", "dask-worker"}
SERVER_MODULES = ("moto.server", "uvicorn", "distributed.cli", "dask")
PREFECT_SERVICES = {"server", "worker", "agent"}  # `prefect server start`; a client's own ephemeral server is uvicorn
RANK_PROGRAMS = {"deepspeed", "torchrun"}
RANK_MODULES = ("deepspeed.launcher", "torch.distributed.run", "torch.distributed.launch")
PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
SHELLS = {"sh", "bash", "dash", "zsh"}


class UnmarkedStart(RuntimeError):
    """Raised where an unmarked test would start a server, a stage or ranks."""


def _program(argv: Sequence[str]) -> tuple[str, str, list[str]]:
    """(program name, `-m` module or script path, its arguments) of a command line; a shell's
    `-c` is looked into."""
    if not argv:
        return "", "", []
    name = os.path.basename(argv[0])
    if name == "env":  # env [VAR=value...] program ...
        rest = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        return _program(argv[argv.index(rest[0]) :]) if rest else ("", "", [])
    if name in SHELLS and "-c" in argv[1:-1]:
        return _program(shlex.split(argv[argv.index("-c") + 1], posix=True))
    if not PYTHON.fullmatch(name):
        return name, "", list(argv[1:])
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "-m" and i + 1 < len(argv):
            return argv[i + 1], argv[i + 1], list(argv[i + 2 :])
        if word.startswith("-m") and len(word) > 2:
            return word[2:], word[2:], list(argv[i + 1 :])
        if word == "-c" or word == "-":
            return "python", "", []
        if word in ("-W", "-X", "--check-hash-based-pycs"):
            i += 2
            continue
        if not word.startswith("-"):
            return os.path.basename(word).removesuffix(".py"), word, list(argv[i + 1 :])
        i += 1
    return "python", "", []


def required(argv: Sequence[str]) -> tuple[str, str] | None:
    """(marker, what it starts) that a command line needs, or None."""
    name, target, args = _program([os.fsdecode(os.fspath(a)) for a in argv])
    module = target if "/" not in target else ""
    under = lambda prefixes: any(module == p or module.startswith(p + ".") for p in prefixes)
    if name in RANK_PROGRAMS or under(RANK_MODULES):
        return "distributed", "DeepSpeed / torchrun ranks"
    if module.startswith("stages.") or re.search(r"(^|/)stages/\w+\.py$", target):
        return "stage", "a pipeline stage"
    if name == "dvc" or under(("dvc",)):
        return "stage", "DVC"
    if name in SERVER_PROGRAMS or under(SERVER_MODULES):
        return "server", f"a server ({name})"
    command = next((a for a in args if not a.startswith("-")), "")
    if (name == "prefect" or under(("prefect",))) and command in PREFECT_SERVICES:
        return "server", f"a Prefect {command}"
    return None


def message(test: str, marker: str, what: str, command: str) -> str:
    command = " ".join(command.split())
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"{test} starts {what} (`{command}`) without the `{marker}` marker: add @pytest.mark.{marker}"


class _State:
    def __init__(self) -> None:
        self.test: str | None = None  # the test being run (set-up, call, teardown); None: nothing is checked
        self.allowed: frozenset[str] = frozenset()
        self.log: str | None = None  # where children record what they refused
        self.violations: list[str] = []


state = _State()


def begin(test: str | None, markers: Iterable[str]) -> None:
    """The test about to be set up (None: none, nothing is checked) and its markers."""
    state.test, state.allowed = test, frozenset(markers) & set(MARKERS)


def take_violations() -> list[str]:
    """What was refused since the last call, here and in children (distinct lines, in order)."""
    lines, state.violations = state.violations, []
    if state.log and os.path.exists(state.log):
        with open(state.log, "r+", encoding="utf-8") as f:
            lines += f.read().splitlines()
            f.seek(0)
            f.truncate()
    return list(dict.fromkeys(lines))


def _refuse(marker: str, what: str, command: str) -> None:
    line = message(state.test or "?", marker, what, command)
    state.violations.append(line)
    if state.log:
        with open(state.log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    raise UnmarkedStart(line)


def check_command(argv: Sequence[str]) -> None:
    if state.test is None:
        return
    need = required(argv)
    if need and need[0] not in state.allowed:
        _refuse(need[0], need[1], " ".join(os.fsdecode(os.fspath(a)) for a in argv))


def _child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` plus the test's id and markers, markers_site/ first on PYTHONPATH."""
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE]
    extra = {ENV_TEST: state.test or "", ENV_MARKS: ",".join(sorted(state.allowed)), "PYTHONPATH": os.pathsep.join([SITE, *path])}
    if state.log:
        extra[ENV_LOG] = state.log
    return {**env, **extra}


def _env_list(env: list[bytes] | None) -> list[bytes]:
    pairs = dict(os.environ) if env is None else dict(os.fsdecode(e).split("=", 1) for e in env)
    return [os.fsencode(f"{k}={v}") for k, v in _child_env(pairs).items()]


def _guarded(function, wrap):
    if getattr(function, "__markers_guard__", False):
        function = function.__wrapped__
    guarded = wrap(function)
    guarded.__wrapped__, guarded.__markers_guard__ = function, True
    return guarded


def install(listen: bool) -> None:
    """Check every spawn (and, with `listen`, every TCP listen) of this process; idempotent, and
    a later call replaces an earlier one (a pytest process started by a test replaces the child check)."""
    import _posixsubprocess

    def fork_exec(original):
        def run(args, executable_list, close_fds, pass_fds, cwd, env, *rest):
            if state.test is not None:
                check_command(args)
                env = _env_list(env)
            return original(args, executable_list, close_fds, pass_fds, cwd, env, *rest)

        return run

    def posix_spawn(original):
        def run(path, argv, env, *rest, **kw):
            if state.test is not None:
                check_command(argv)
                env = _child_env(dict(env))
            return original(path, argv, env, *rest, **kw)

        return run

    _posixsubprocess.fork_exec = _guarded(_posixsubprocess.fork_exec, fork_exec)
    if "subprocess" in sys.modules:  # it took its own reference at import
        sys.modules["subprocess"]._fork_exec = _posixsubprocess.fork_exec
    os.posix_spawn = _guarded(os.posix_spawn, posix_spawn)
    os.posix_spawnp = _guarded(os.posix_spawnp, posix_spawn)
    if listen:
        import socket

        def listening(original):
            def run(sock, *args):
                if state.test is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and "server" not in state.allowed:
                    try:
                        where = "{}:{}".format(*sock.getsockname()[:2])
                    except OSError:
                        where = "?"
                    _refuse("server", "a server", f"listen on {where}")
                return original(sock, *args)

            return run

        socket.socket.listen = _guarded(socket.socket.listen, listening)


def install_in_child() -> None:
    """sitecustomize's part: a process started by a test checks itself and what it starts."""
    test = os.environ.get(ENV_TEST)
    if not test:
        return
    begin(test, filter(None, os.environ.get(ENV_MARKS, "").split(",")))
    state.log = os.environ.get(ENV_LOG) or None
    try:
        check_command(sys.orig_argv)  # started by a program that does not check (make, a shell)
    except UnmarkedStart as refused:
        print(f"error: {refused}", file=sys.stderr, flush=True)
        os._exit(3)
    install(listen=False)
