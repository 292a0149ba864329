"""`realsr annotate-template`: a sidecar skeleton for your own photos, to fill in by hand.

The `sidecar` annotate backend needs captions and tags per photo; this writes every photo's
file name (as `ingest` will name it in data/raw) with empty fields, so nothing is missed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors


class TemplateError(RuntimeError):
    """The template cannot be written (an existing file, no photos)."""


@app.command("annotate-template")
@one_line_errors(TemplateError)
def annotate_template(
    source: Annotated[str, typer.Argument(help="A photo folder or s3://bucket/prefix (as data.source).")],
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="File to write [default: SOURCE/annotations.json for a folder, "
                     "./annotations.json for S3]."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a sidecar annotations.json listing every photo of SOURCE with empty captions and tags."""
    import json

    from realsr_r1.annotate.sidecar import sidecar_template
    from realsr_r1.atomic import write_text
    from realsr_r1.config import DataParams
    from realsr_r1.data.sources import SIDECAR, SourceError, list_source, unsafe_reason

    if out is None:
        out = Path(SIDECAR) if "://" in source else Path(source).expanduser() / SIDECAR
    if out.exists() and not force:
        raise TemplateError(f"{out} exists (holding annotations?); pass --force to overwrite it, or -o elsewhere")
    try:
        files = list_source(source, DataParams().extensions)
    except SourceError as err:
        raise TemplateError(str(err)) from None
    names = [f.name for f in files if f.name != SIDECAR and unsafe_reason(f.name) is None]
    if not names:
        raise TemplateError(f"no photos in {source}")
    write_text(out, json.dumps(sidecar_template(names), indent=2) + "\n")
    typer.echo(f"{out}: {len(names)} photos to describe (three captions and the tags each)")
