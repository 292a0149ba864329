"""`realsr synthesize` and `realsr degrade`: the synthesis stages' code, outside DVC."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors

if TYPE_CHECKING:
    from realsr_r1.config import Params

ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params.yaml to take the degradation settings from (default: built-in)")
]


def _params(path: Path | None, overrides: dict) -> Params:
    from realsr_r1.config import load_params, parse_params

    return load_params(path, overrides) if path else parse_params(overrides, "command line")


@app.command()
@one_line_errors("realsr_r1.config:ParamsError", "realsr_r1.data.images:PhotoError", FileNotFoundError, NotADirectoryError)
def synthesize(
    input: Annotated[Path, typer.Option("--input", help="folder of photos (searched recursively)")],
    out: Annotated[Path, typer.Option("--out", help="output folder: train/ and val/ shards, report.json")],
    gt_size: Annotated[int, typer.Option(help="GT crop side in pixels")] = 256,
    per_image: Annotated[int, typer.Option(help="degradations per GT crop (K)")] = 4,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(help="processes (0: all cores)")] = 0,
    scale: Annotated[int, typer.Option(help="LR side = GT side / scale")] = 4,
    crops_per_image: Annotated[int, typer.Option(help="GT crops per photo")] = 1,
    short_side: Annotated[int | None, typer.Option(help="resize photos' short side first (default: keep)")] = None,
    val_fraction: Annotated[float, typer.Option(help="share of photos (by content hash) in val/")] = 0.0,
    params: ParamsOption = None,
) -> None:
    """Prepare and degrade a folder of photos into WebDataset shards (prepare + synthesize)."""
    from realsr_r1.atomic import atomic_dir, write_json
    from realsr_r1.data.images import PhotoError
    from realsr_r1.data.prepare import PrepareReport, iter_folder, prepare_photos
    from realsr_r1.data.synthesis import synthesize_split

    if not input.is_dir():
        raise NotADirectoryError(f"--input: not a folder: {input}")
    cfg = _params(
        params,
        {
            "seed": seed,
            "prepare": {"gt_size": gt_size, "short_side": short_side, "crops_per_image": crops_per_image,
                        "val_fraction": val_fraction, "min_size": gt_size},
            "synthesize": {"scale": scale, "per_image": per_image, "workers": workers},
        },
    )
    report = PrepareReport()
    start = time.perf_counter()
    crops = sorted(prepare_photos(iter_folder(input, cfg.data.extensions), cfg.prepare, cfg.seed, report), key=lambda c: c.key)
    for rejected in report.rejected:
        typer.echo(f"skipped {rejected['file']}: {rejected['reason']}", err=True)
    if not crops:
        raise PhotoError(f"{input}: no valid photo ({len(report.rejected)} rejected)")
    p = cfg.synthesize
    stats = {}
    with atomic_dir(out) as tmp:
        for split in ("train", "val"):
            split_crops = [c for c in crops if c.split == split]
            (tmp / split).mkdir()
            stats[split] = synthesize_split(
                split_crops, len(split_crops), tmp / split, p.per_image, p.degradation, p.scale, cfg.seed, p.workers,
                p.shard_size,
            )
        write_json(tmp / "report.json", {**report.as_dict(), "samples": {k: v["samples"] for k, v in stats.items()}})
    seconds = time.perf_counter() - start
    total = sum(s["samples"] for s in stats.values())
    typer.echo(f"{total} samples from {len(report.accepted)} photos in {seconds:.1f} s ({total / seconds:.1f} pairs/s) -> {out}")


@app.command()
@one_line_errors("realsr_r1.config:ParamsError", "realsr_r1.data.images:PhotoError", FileNotFoundError)
def degrade(
    image: Annotated[Path | None, typer.Argument(help="photo to degrade (omit with --count to only draw parameters)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="where to write the LR PNG")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    scale: Annotated[int, typer.Option()] = 4,
    count: Annotated[int, typer.Option(help="number of parameter draws for --jsonl")] = 1,
    jsonl: Annotated[Path | None, typer.Option(help="write COUNT parameter draws (no pixels), one JSON per line")] = None,
    gt_size: Annotated[int, typer.Option(help="GT size assumed by --jsonl draws")] = 256,
    params: ParamsOption = None,
) -> None:
    """Degrade one photo (prints its description), or write parameter draws with --jsonl."""
    import numpy as np

    from realsr_r1.atomic import write_bytes
    from realsr_r1.data.images import encode_png, read_photo
    from realsr_r1.data.synthesis import degrade_sample
    from realsr_r1.degrade import draw_degradation

    cfg = _params(params, {"synthesize": {"scale": scale}})
    p = cfg.synthesize.degradation
    rng = np.random.default_rng(seed)
    if jsonl is not None:
        lines = [json.dumps(draw_degradation(rng, p, (gt_size, gt_size), scale), sort_keys=True) for _ in range(count)]
        write_bytes(jsonl, ("\n".join(lines) + "\n").encode())
        typer.echo(f"{count} draws -> {jsonl}")
        return
    if image is None or output is None:
        raise typer.BadParameter("give IMAGE and -o LR.png, or --count N --jsonl FILE")
    gt = read_photo(image)
    h, w = (gt.shape[0] // scale) * scale, (gt.shape[1] // scale) * scale
    lr, record = degrade_sample(gt[:h, :w], p, scale, rng)
    write_bytes(output, encode_png(lr))
    typer.echo(record["text"])
