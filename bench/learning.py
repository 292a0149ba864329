"""What training learns, over training seeds: SFT, GRPO and the evaluation on `--runs` (seed, threads).

Each run trains in its own folder under `--out` from this checkout's data stages (data/,
models/tokenizer, models/policy_init: run `dvc repro init_policy` first) with params.yaml's
`sft.seed`, `grpo.seed` and `threads` set, running the sft, grpo and evaluate stages as `dvc repro`
would (a run already done with the same params is reused). The headline figures (HEADLINE) are printed as mean ± std over the runs at the default
thread count, next to the largest gap between any two runs (seeds and thread counts together).

    python bench/learning.py [--runs 0:2 1:2 2:2 0:1] [--jobs 3] [--workspace-run 0:2]
                             [--results bench/learning.json] [--tolerances .ci/tolerances.yaml]

`--workspace-run S:T` takes that run's figures from this checkout's metrics/ (a `dvc repro` with
those params) instead of training it again. `--results` keeps every run's figures and the
machine; `--tolerances` writes the reproduction tolerances `.ci/reproduce.py` checks: for each
headline figure, MARGIN times the largest gap between runs, never below a floor for float noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from realsr_r1.release import lookup

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("sft", "grpo", "evaluate")
LINKED = ("data", "models/tokenizer", "models/policy_init", "stages", "dvc.yaml")
# (metrics file, dotted key): what the README and the reproduction check quote
HEADLINE: tuple[tuple[str, str], ...] = (
    *(("sft", f"final.rewards.{r}") for r in ("total", "format", "degradation", "understanding", "generation")),
    *(("sft", f"final.{m}") for m in ("psnr_y.expected", "psnr_y.sampled", "ssim_y.expected", "seams.expected", "seams.sampled")),
    ("sft", "final.psnr_y.bicubic"),
    ("sft", "final.psnr_y.tokenizer"),
    *(("grpo", f"grpo.rewards.{r}") for r in ("total", "format", "degradation", "understanding", "generation")),
    *(("grpo", f"grpo.{m}") for m in ("psnr_y.expected", "psnr_y.sampled", "ssim_y.expected", "seams.expected", "seams.sampled")),
    *(("evaluate", f"val.{m}.{k}") for m in ("bicubic", "realesrgan", "base", "tokenizer") for k in ("psnr", "ssim", "seams")),
    *(("evaluate", f"val.{m}.{k}") for m in ("sft", "grpo", "sft_sampled", "grpo_sampled") for k in ("psnr", "ssim", "seams")),
    *(("evaluate", f"val.{m}.reward_total") for m in ("sft", "grpo")),
    # whole photos never seen in training: where the no-reference NIQE means something
    *(("evaluate", f"unseen.{m}.{k}") for m in ("bicubic", "realesrgan", "base", "tokenizer", "sft", "grpo") for k in ("psnr", "ssim", "niqe", "seams")),
)
# The gap of 4 runs is about 2 standard deviations of one run, but with 4 runs it is itself a
# rough estimate: for some of the ~70 figures it comes out small by chance. A fresh-clone
# reproduction put one figure at 3.4 times its 4-run gap (evaluate:unseen.grpo.psnr) and another
# at 2.7, so the margin is 5: the check still fails a figure that moves well beyond its spread.
MARGIN = 5.0
FLOOR = 1e-3  # relative: float noise of a figure no training touches (bicubic's NIQE moves in the 4th decimal)


def figures(metrics_dir: Path) -> dict[str, float]:
    """The headline figures of one run, keyed `file:dotted.key`."""
    files = {name: json.loads((metrics_dir / f"{name}.json").read_text()) for name in {f for f, _ in HEADLINE}}
    out = {f"{name}:{key}": lookup(files[name], key) for name, key in HEADLINE}
    if missing := [name for name, value in out.items() if value is None]:
        raise SystemExit(f"{metrics_dir}: no figure {', '.join(missing)}")
    return out


def train(seed: int, threads: int, out: Path) -> dict[str, float]:
    """One run of the training stages in its own folder; its headline figures."""
    work = out / f"seed{seed}-threads{threads}"
    done = work / "done"  # written once every stage ran with the current params: a rerun reuses the run
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["threads"] = threads
    params["sft"]["seed"] = params["grpo"]["seed"] = seed
    wanted = yaml.safe_dump(params, sort_keys=False)
    if done.is_file() and done.read_text() == wanted:
        return figures(work / "metrics")
    (work / "models").mkdir(parents=True, exist_ok=True)
    for rel in LINKED:
        if not (work / rel).exists():
            (work / rel).symlink_to(ROOT / rel)
    (work / "params.yaml").write_text(wanted)
    for stage in STAGES:
        start = time.monotonic()
        with open(work / f"{stage}.log", "w") as log:
            status = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if status:
            raise SystemExit(f"{work}: stage {stage} failed (exit {status}); see {work / f'{stage}.log'}")
        print(f"seed {seed}, {threads} threads: {stage} in {time.monotonic() - start:.0f} s", flush=True)
    done.write_text(wanted)
    return figures(work / "metrics")


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def parse_run(text: str) -> tuple[int, int]:
    seed, _, threads = text.partition(":")
    return int(seed), int(threads)


def tolerances(runs: dict[str, dict[str, float]], default_threads: int) -> dict[str, dict]:
    """Per headline figure: MARGIN x the largest gap between runs (floored), with the measurements it rests on."""
    out = {}
    for name in next(iter(runs.values())):
        values = {run: figs[name] for run, figs in runs.items()}
        gap = max(values.values()) - min(values.values())
        seeds = [v for run, v in values.items() if run.endswith(f":{default_threads}")]
        floor = FLOOR * abs(statistics.mean(values.values()))
        spread = f"seeds at {default_threads} threads: {statistics.mean(seeds):.4g} ± {statistics.stdev(seeds) if len(seeds) > 1 else 0:.2g}"
        why = (f"{MARGIN:g} x the largest gap between {len(values)} runs ({gap:.4g})" if MARGIN * gap >= floor
               else f"float noise across CPUs ({FLOOR:g} of the value): the largest gap between {len(values)} runs is {gap:.2g}")  # fmt: skip
        out[name] = {"tolerance": float(f"{max(MARGIN * gap, floor):.3g}"), "why": f"{why}; {spread}"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["0:2", "1:2", "2:2", "0:1"], help="SEED:THREADS per run")
    ap.add_argument("--workspace-run", default=None, help="SEED:THREADS whose figures are this checkout's metrics/")
    ap.add_argument("--jobs", type=int, default=3, help="runs trained at once")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/learning")
    ap.add_argument("--results", type=Path, default=None, help="write every run's figures here (JSON)")
    ap.add_argument("--tolerances", type=Path, default=None, help="write the reproduction tolerances here (YAML)")
    args = ap.parse_args()
    runs = [parse_run(r) for r in args.runs]
    default_threads = yaml.safe_load((ROOT / "params.yaml").read_text())["threads"]
    results: dict[str, dict[str, float]] = {}
    if args.workspace_run:
        results[args.workspace_run] = figures(ROOT / "metrics")
    todo = [r for r in runs if f"{r[0]}:{r[1]}" not in results]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for (seed, threads), figs in zip(todo, pool.map(lambda r: train(*r, args.out), todo)):
            results[f"{seed}:{threads}"] = figs
    seeds = {run: figs for run, figs in results.items() if run.endswith(f":{default_threads}")}
    print(f"\n{'figure':<42} {'mean ± std over ' + str(len(seeds)) + ' seeds':>26} {'largest gap':>12}")
    for name in next(iter(results.values())):
        values = [figs[name] for figs in seeds.values()]
        gap = max(f[name] for f in results.values()) - min(f[name] for f in results.values())
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:<42} {statistics.mean(values):>17.4f} ± {std:<6.4f} {gap:>12.4f}")
    if args.results:
        machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load": round(os.getloadavg()[0], 2)}
        args.results.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine, "runs": results}, indent=1) + "\n")
    if args.tolerances:
        header = ("# Reproduction tolerances of the training and evaluation figures (.ci/reproduce.py checks\n"
                  "# them): written by `python bench/learning.py --tolerances`, from the runs it lists.\n")  # fmt: skip
        args.tolerances.write_text(header + yaml.safe_dump(tolerances(results, default_threads), sort_keys=False, width=200, allow_unicode=True))


if __name__ == "__main__":
    main()
