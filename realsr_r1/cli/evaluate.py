"""`realsr evaluate`: a policy, bicubic and other methods' outputs on a benchmark folder (RealSR protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from realsr_r1.cli.app import app, one_line_errors
from realsr_r1.cli.policy import ParamsOption, _params, default_model


def parse_methods(specs: list[str]) -> dict[str, Path]:
    """NAME=FOLDER options -> {name: folder}; a malformed or repeated name is one line."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--method {spec!r}: expected NAME=FOLDER")
        if name in out or name in ("bicubic", "LR", "GT"):
            raise ValueError(f"--method {spec!r}: the name {name!r} is taken")
        out[name] = Path(folder)
    return out


@app.command()
@one_line_errors(
    "realsr_r1.config:ParamsError", "realsr_r1.evaluate.benchmark:BenchmarkError", "realsr_r1.policy.loading:PolicyLoadError",
    FileNotFoundError, ValueError,
)
def evaluate(
    benchmark: Annotated[Path, typer.Option("--benchmark", help="folder: LR/ and HR/ with matching names, or LR photos only")],
    model: Annotated[
        Path | None, typer.Option("--model", help="policy checkpoint (default: models/grpo, else models/sft)")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option("--method", help="NAME=FOLDER: another method's outputs, named like the LR photos (repeatable)")
    ] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="output folder (default: evaluation/<benchmark name>)")] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="checkpoints of the deep metrics (LPIPS, DISTS, MUSIQ, ...); without: skipped")
    ] = None,
    decode: Annotated[str, typer.Option("--decode", help="image decoding of the policy: expected | sample | both")] = "expected",
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (default: rollout.device)")] = None,
    params: ParamsOption = None,
) -> None:
    """Score the model, bicubic and other methods on a benchmark; write metrics, CSV, sheets and report.html."""
    from realsr_r1.evaluate import benchmark as bench_lib
    from realsr_r1.evaluate.protocol import MetricSet
    from realsr_r1.evaluate.report import write_report
    from realsr_r1.policy.loading import load_policy
    from realsr_r1.policy.settings import resolve_device, sampling

    if decode not in ("expected", "sample", "both"):
        raise ValueError(f"--decode {decode!r}: expected expected, sample or both")
    others = parse_methods(method or [])
    model = model or default_model()
    p = _params(params)
    policy = load_policy(model, resolve_device(device or p.rollout.device))
    scale = policy.scale
    bench = bench_lib.load_benchmark(benchmark, scale)
    s = sampling(p, policy)
    label = model.resolve().name
    methods = {"bicubic": bench_lib.bicubic_method} | bench_lib.realesrgan_methods(p.threads, bench.problems)
    for mode in ("expected", "sample") if decode == "both" else (decode,):
        methods[f"{label} ({'sampled' if mode == 'sample' else mode})"] = bench_lib.policy_method(policy, s, mode, seed=seed)
    for name, folder in others.items():
        methods[name] = bench_lib.folder_method(folder, bench.problems)
    out = out or Path("evaluation") / benchmark.resolve().name
    kind = "paired" if bench.paired else "LR only (no-reference metrics)"
    typer.echo(f"{benchmark}: {len(bench.pairs)} photos, {kind}; methods: {', '.join(methods)}", err=True)
    result = bench_lib.evaluate(bench, methods, scale, MetricSet(weights))
    written = write_report(result, out, {p.name: p.lr for p in bench.pairs}, {p.name: p.hr for p in bench.pairs})
    rows = bench_lib.table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if result.problems:
        typer.echo(f"{len(result.problems)} not scored (listed in metrics.json and the report)", err=True)
    typer.echo(f"wrote {out}/: {', '.join(p.relative_to(out).as_posix() for p in written[:3])} and {len(written) - 3} sheets")
