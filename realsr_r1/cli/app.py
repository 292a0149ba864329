"""The Typer app every command module registers on, the one-line error convention, and logging.

Command modules import only typer and the standard library at module level: torch,
transformers, pyiqa and boto3 are imported inside the commands that use them, so `realsr --help`
starts in well under a second. Exceptions that live in heavy modules are therefore named as
"module:Class" strings and resolved only when the command runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="realsr",
    help="RealSR-R1: real-world super-resolution with a vision-language chain of thought.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def setup_logging(verbose: bool) -> None:
    """The project's own INFO lines always; other libraries' (pyiqa, botocore) only with -v."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # no-op when already set up
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("realsr_r1").setLevel(logging.INFO)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="also show the libraries' INFO logs (pyiqa, botocore, ...)")
    ] = False,
) -> None:
    """RealSR-R1: real-world super-resolution with a vision-language chain of thought."""
    setup_logging(verbose)


def _resolve(error: type[BaseException] | str) -> type[BaseException]:
    if isinstance(error, str):
        module, _, name = error.partition(":")
        return getattr(importlib.import_module(module), name)
    return error


def one_line_errors(*errors: type[BaseException] | str) -> Callable:
    """Turn the listed exceptions into `error: ...` on stderr and exit code 2.

    An error is a class or a "module:Class" string, imported only when the command runs.
    """

    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if isinstance(err, tuple(_resolve(e) for e in errors)):
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(2) from None
                raise

        return wrapper

    return decorate
