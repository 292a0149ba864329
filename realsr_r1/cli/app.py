"""The Typer app every command module registers on, and the one-line error convention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

app = typer.Typer(
    name="realsr",
    help="RealSR-R1: real-world super-resolution with a vision-language chain of thought.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def one_line_errors(*errors: type[BaseException]) -> Callable:
    """Turn the listed exceptions into `error: ...` on stderr and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            try:
                return fn(*args, **kwargs)
            except errors as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None

        return wrapper

    return decorate
