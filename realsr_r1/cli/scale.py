"""`realsr preset` and `realsr janus-tiny`: change of scale by params alone.

`preset` renders a `configs/scale/*.yaml` file for `dvc exp run` (`-S key=value ...`) or for the
Prefect flow's `overrides` (JSON), after validating it over params.yaml. `janus-tiny` writes a
random-init tiny Janus in the Janus-Pro folder layout, for trying `policy.backbone: janus`
without a download (what CI runs).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors


@app.command("preset")
@one_line_errors("realsr_r1.config:ParamsError")
def preset(
    file: Annotated[Path, typer.Argument(help="A preset: configs/scale/tiny.yaml, janus-pro-1b.yaml, janus-pro-7b.yaml, or your own.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object (the flow's `overrides`), not `-S` arguments.")] = False,
    params: Annotated[Path, typer.Option("--params", help="The params file it is laid over (validated together).")] = Path("params.yaml"),
) -> None:
    """Print a preset as `dvc exp run` arguments: `dvc exp run $(realsr preset configs/scale/janus-pro-1b.yaml)`."""
    from realsr_r1.presets import read_preset, set_args, validate

    dotted = read_preset(file)
    validate(params, dotted)
    if as_json:
        typer.echo(json.dumps(dotted))
    else:
        typer.echo(" ".join(f"-S {shlex.quote(arg)}" for arg in set_args(dotted)))


@app.command("janus-tiny")
@one_line_errors(OSError)
def janus_tiny(
    out: Annotated[Path, typer.Argument(help="Folder to write (replaced atomically).")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a tiny random Janus (about 4 M parameters) in the Janus-Pro folder layout."""
    from realsr_r1.policy.janus_tiny import build_tiny_janus, bundled_texts

    build_tiny_janus(out, bundled_texts(), seed=seed)
    typer.echo(f"wrote {out} (a random-init Janus; set policy.backbone=janus policy.path={out})")
