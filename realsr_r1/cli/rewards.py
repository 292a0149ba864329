"""`realsr reward COMPLETION.json`: score one completion against its ground truth, reward by reward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors


@app.command("reward")
@one_line_errors(
    "realsr_r1.rewards.case:CaseError", "realsr_r1.config:ParamsError", "realsr_r1.rewards.generation:MetricWeightsError",
    FileNotFoundError,
)
def reward(
    completion: Annotated[
        Path, typer.Argument(help="case JSON: completion text + image paths, truth (docs/rewards.md)")
    ],
    params: Annotated[
        Path, typer.Option(help="params file whose `rewards` section is used (defaults if absent)")
    ] = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="print the rewards as one JSON object")] = False,
) -> None:
    """Print the format, degradation, understanding and generation rewards and their weighted total."""
    from realsr_r1.config import RewardParams, load_params
    from realsr_r1.rewards.case import read_case
    from realsr_r1.rewards.scoring import REWARDS, score_batch

    cfg = load_params(params).rewards if params.exists() else RewardParams()
    comp, truth = read_case(completion)
    batch = score_batch([comp], [truth], cfg)
    scores = {name: float(batch.rewards[name][0]) for name in REWARDS}
    weights = cfg.weights.model_dump()
    if as_json:
        out = {**scores, "total": float(batch.total[0]), "weights": weights, "format_error": batch.errors[0]}
        typer.echo(json.dumps(out, indent=2))
        return
    for name in REWARDS:
        typer.echo(f"{name:<14} {scores[name]:.4f}   (weight {weights[name]:g})")
    typer.echo(f"{'total':<14} {float(batch.total[0]):.4f}")
    if batch.errors[0]:
        typer.echo(f"format error: {batch.errors[0]}")
