"""`realsr init-policy` (an untrained checkpoint), `realsr upscale` (run the chain), `realsr unseen` (never-seen photos)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors

if TYPE_CHECKING:
    from realsr_r1.config import Params

log = logging.getLogger(__name__)
ParamsOption = Annotated[Path | None, typer.Option("--params", help="params.yaml (default: built-in defaults)")]


def _params(path: Path | None) -> Params:
    from realsr_r1.config import load_params, parse_params

    return load_params(path) if path else parse_params({}, "defaults")


TRAINED = (Path("models/grpo"), Path("models/sft"))  # newest stage first


def default_model(candidates: tuple[Path, ...] = TRAINED) -> Path:
    """The newest trained checkpoint of the pipeline, or one line saying how to get one."""
    for path in candidates:
        if (path / "policy.json").is_file():
            return path
    raise FileNotFoundError(
        f"no trained checkpoint: neither {' nor '.join(str(p) for p in candidates)} holds one; "
        "train one with `dvc repro sft` (or `make pipeline`), or pass --model DIR"
    )


@app.command("init-policy")
@one_line_errors("realsr_r1.config:ParamsError", "realsr_r1.tokenizers.image:TokenizerError", FileNotFoundError, ValueError)
def init_policy(
    tokenizer: Annotated[Path, typer.Option("--tokenizer", help="tokenizer stage output: image/ and text/")],
    out: Annotated[Path, typer.Option("-o", "--out", help="directory to write the policy checkpoint to")],
    params: ParamsOption = None,
) -> None:
    """Write an untrained policy checkpoint built from params (the starting point of SFT)."""
    from realsr_r1.policy.settings import write_initial_policy

    policy = write_initial_policy(_params(params), tokenizer, out)
    n = sum(p.numel() for p in policy.parameters())
    typer.echo(f"wrote {out} ({n / 1e6:.2f} M parameters, vocabulary {policy.layout.vocab_size})")


def duration(seconds: float) -> str:
    """5 min 39 s, 12.3 s: what a person reads at a glance."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {secs} s"


def guard_notes(capped: int, unfinished: int, tiles: int, max_text_tokens: int | None, max_new_tokens: int) -> list[str]:
    """What "tiles hit a length guard" means for the picture, and what to change."""
    notes = []
    if capped:
        notes.append(
            f"{capped} of {tiles} tiles never closed a text block within rollout.max_text_tokens={max_text_tokens} "
            "tokens, so the text was cut there (their images were still generated). A model before SFT never "
            "closes its texts, so this is expected of it; for a trained model, raise rollout.max_text_tokens in --params."
        )
    if unfinished:
        notes.append(
            f"{unfinished} of {tiles} tiles did not finish their chain within rollout.max_new_tokens={max_new_tokens} "
            "tokens: those tiles show plain bicubic upscaling, not the model's output. Raise rollout.max_new_tokens "
            "in --params."
        )
    return notes


@app.command()
@one_line_errors(
    "realsr_r1.config:ParamsError", "realsr_r1.data.images:PhotoError", "realsr_r1.policy.loading:PolicyLoadError",
    "realsr_r1.tokenizers.image:TokenizerError", FileNotFoundError, ValueError,
)
def upscale(
    image: Annotated[Path, typer.Argument(help="photo to upscale (any size; gray and RGBA are fine)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output PNG")],
    model: Annotated[
        Path | None, typer.Option("--model", help="policy checkpoint directory (default: models/grpo, else models/sft)")
    ] = None,
    show_cot: Annotated[bool, typer.Option("--show-cot", help="print the degradation and understanding text")] = False,
    steps_dir: Annotated[Path | None, typer.Option("--steps-dir", help="also write the rough and middle images here")] = None,
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    overlap: Annotated[int, typer.Option("--overlap", help="tile overlap in LR pixels")] = 4,
    decode: Annotated[
        str, typer.Option("--decode", help="expected (the mean image under the model's code distributions: fewer seams, "
                          "higher PSNR; docs/evaluation.md) | sample (the codes drawn)")
    ] = "expected",
    device: Annotated[
        str | None, typer.Option("--device", help="auto | cpu | cuda (default: rollout.device of --params; auto: cuda if available)")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Restore and upscale a photo with the VLCoT chain, tile by tile."""
    from dataclasses import replace

    from realsr_r1.data.images import read_photo, write_png
    from realsr_r1.policy.loading import load_policy
    from realsr_r1.policy.settings import resolve_device, sampling
    from realsr_r1.policy.upscale import tile_count
    from realsr_r1.policy.upscale import upscale as run_upscale

    if decode not in ("sample", "expected"):
        raise ValueError(f"--decode {decode!r}: expected sample or expected")
    p = _params(params)
    where = resolve_device(device or p.rollout.device)
    photo = read_photo(image)
    model = model or default_model()
    policy = load_policy(model, where)
    policy.image_tokenizer.config = replace(policy.image_tokenizer.config, decode=decode)
    if policy.record is not None and not policy.record.trained:
        typer.echo(
            f"note: {model} is {policy.record.describe()}: expect noise for images and random words for text. "
            "Upscale with a trained checkpoint (after `dvc repro sft`) for real results.",
            err=True,
        )
    h, w = photo.shape[:2]
    tiles = tile_count(h, w, policy.lr_size, overlap)
    typer.echo(f"{image.name}: {w}x{h}, {tiles} tiles of {policy.lr_size}x{policy.lr_size} px on {where}, {decode} decoding; "
               "timing the first batch ...", err=True)  # fmt: skip
    estimate = lambda total, per_tile, n: typer.echo(
        f"estimated time: {duration(total)} ({per_tile:.2f} s per tile x {tiles} tiles, measured on the first {n})", err=True
    )
    s = sampling(p, policy)
    result = run_upscale(policy, photo, s, seed=seed, overlap=overlap, on_estimate=estimate)
    write_png(out, result.images["final_image"])
    if steps_dir is not None:
        for block in ("rough_image", "middle_image"):
            write_png(steps_dir / f"{block}.png", result.images[block])
    fh, fw = result.images["final_image"].shape[:2]
    typer.echo(f"{image.name}: {w}x{h} -> {fw}x{fh} in {result.tiles} tiles, wrote {out}")
    for note in guard_notes(result.capped, result.unfinished, result.tiles, s.max_text_tokens, s.max_new_tokens):
        typer.echo(f"note: {note}", err=True)
    if show_cot:
        chain = result.chain
        if chain is None:
            typer.echo("(the centre tile's chain did not finish: raise rollout.max_new_tokens)")
        else:
            typer.echo(f"degradation: {chain.degradation}")
            typer.echo(f"rough understanding: {chain.rough_understand}")
            typer.echo(f"middle understanding: {chain.middle_understand}")
            typer.echo(f"final understanding: {chain.final_understand}")


@app.command()
@one_line_errors(
    "realsr_r1.config:ParamsError", "realsr_r1.data.images:PhotoError", "realsr_r1.policy.loading:PolicyLoadError",
    "realsr_r1.data.sources:SourceError", FileNotFoundError, ValueError,
)
def unseen(
    folder: Annotated[
        Path | None, typer.Argument(help="folder of photos (default: pyiqa's test photos, never in the bundled source)")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="policy checkpoint directory (default: models/grpo, else models/sft)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="degradation seed of the first photo (the next get seed + 1, ...)")] = 0,
    decode: Annotated[
        str | None, typer.Option("--decode", help="sample | expected (default: the model's image tokenizer setting)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the scores here")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (default: rollout.device)")] = None,
    params: ParamsOption = None,
) -> None:
    """PSNR/SSIM (Y) of the model vs bicubic on photos it never saw, degraded by the pipeline (fixed seed)."""
    from dataclasses import replace

    from realsr_r1.atomic import write_json
    from realsr_r1.data.sources import UNSEEN_PHOTOS, wheel_photos
    from realsr_r1.policy.loading import load_policy
    from realsr_r1.policy.settings import resolve_device, sampling
    from realsr_r1.unseen import folder_photos, score_photos

    p = _params(params)
    if decode not in (None, "sample", "expected"):
        raise ValueError(f"--decode {decode!r}: expected sample or expected")
    photos = wheel_photos(UNSEEN_PHOTOS) if folder is None else folder_photos(folder, p.data.extensions)
    model = model or default_model()
    policy = load_policy(model, resolve_device(device or p.rollout.device))
    if decode is not None:
        policy.image_tokenizer.config = replace(policy.image_tokenizer.config, decode=decode)
    scores = score_photos(policy, photos, p, sampling(p, policy), seed=seed)
    typer.echo(f"{'photo':32s} {'size':>9s} {'PSNR-Y':>7s} {'SSIM-Y':>7s} {'bicubic':>8s} {'SSIM':>6s}")
    for s in scores:
        typer.echo(f"{s.photo:32s} {s.size:>9s} {s.psnr:7.2f} {s.ssim:7.4f} {s.bicubic_psnr:8.2f} {s.bicubic_ssim:6.4f}")
    mean = lambda key: sum(getattr(s, key) for s in scores) / len(scores)
    gain = mean("psnr") - mean("bicubic_psnr")
    typer.echo(
        f"{'mean':32s} {'':>9s} {mean('psnr'):7.2f} {mean('ssim'):7.4f} {mean('bicubic_psnr'):8.2f} "
        f"{mean('bicubic_ssim'):6.4f}   model - bicubic: {gain:+.2f} dB ({policy.image_tokenizer.config.decode} decoding)"
    )
    if json_out is not None:
        write_json(json_out, {"model": str(model), "decode": policy.image_tokenizer.config.decode, "seed": seed,
                              "photos": [s.as_dict() for s in scores], "psnr_gain": gain})
