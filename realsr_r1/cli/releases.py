"""`realsr releases` and `realsr pull`: browse and fetch checksummed checkpoints from S3.

A consumer needs no clone: the bucket comes from `--bucket` or $REALSR_RELEASE_BUCKET and the
endpoint and credentials from the usual AWS environment (`AWS_ENDPOINT_URL` for S3-compatible stores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors

BucketOption = Annotated[
    str, typer.Option("--bucket", envvar="REALSR_RELEASE_BUCKET", help="S3 bucket of the releases.")
]


@app.command("releases")
@one_line_errors("realsr_r1.storage:ReleaseError")
def releases(
    name: Annotated[str, typer.Argument(help="Only this release name.")] = "",
    bucket: BucketOption = "",
) -> None:
    """List the complete releases (those whose manifest is written), oldest version first."""
    from realsr_r1.storage import ReleaseStore, parse_ref

    store = ReleaseStore(bucket)
    found = store.list(parse_ref(name)[0] if name else None)
    if not found:
        typer.echo(f"no releases in s3://{bucket}/releases/" + (f"{name}/" if name else ""))
        return
    typer.echo(f"{'release':<32} {'created':<26} {'files':>5} {'bytes':>12}")
    for rel in found:
        typer.echo(f"{rel.ref:<32} {rel.created:<26} {len(rel.files):>5} {rel.size:>12}")


@app.command("pull")
@one_line_errors("realsr_r1.storage:ReleaseError")
def pull(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (latest when no version).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to create (must be absent or empty).")],
    bucket: BucketOption = "",
) -> None:
    """Download a release and verify every sha256; a mismatch deletes the download and fails."""
    from realsr_r1.storage import ReleaseStore, parse_ref

    name, version = parse_ref(ref)
    rel = ReleaseStore(bucket).pull(name, version, out)
    typer.echo(f"{rel.ref}: {len(rel.files)} files verified in {out}")
