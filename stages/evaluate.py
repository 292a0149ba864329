"""Stage `evaluate`: bicubic, Real-ESRGAN x4plus (the peer, when the `peer` extra is installed; else
skipped with the reason), the image tokenizer's base alone (what the chain's residual codes add
to) and its ceiling, models/sft and models/grpo on the val shards
and on every folder of `evaluate.benchmarks`, scored with the RealSR protocol (pyiqa).

On the val shards each model rolls out once per photo (batched, same seeds for both models) and is
scored with both decodings ("sft" / "grpo": expected decoding, "*_sampled": the drawn codes) and
with its own four rewards. On whole photos (the `unseen` benchmark: the photos `realsr
unseen` scores, kept out of training and degraded here; and each benchmark folder) the models run
through the tiled upscaler (expected decoding), next to bicubic, the tokenizer (paired only) and
`evaluate.methods` folders; no-reference metrics (NIQE, ...) are scored on those whole photos only.
Writes metrics/evaluate.json (benchmark -> method -> metric: `dvc metrics show` and the publish
gate read it) and reports/evaluate/<benchmark>/ (report.html, metrics.json, per_image.csv,
sheets/*.png).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from realsr_r1.atomic import write_json
from realsr_r1.config import Params
from realsr_r1.data.shards import evenly_spaced
from realsr_r1.data.sources import UNSEEN_PHOTOS, wheel_photos
from realsr_r1.evaluate import benchmark as bench_lib
from realsr_r1.evaluate.benchmark import Benchmark, BenchmarkError, Pair, Result
from realsr_r1.evaluate.protocol import MetricSet
from realsr_r1.evaluate.report import SheetSpec, curve_png, write_report
from realsr_r1.evaluate.val import EvalSample, PolicyOutputs, final_images
from realsr_r1.policy.interface import Policy, Sampling
from realsr_r1.policy.loading import load_policy
from realsr_r1.policy.settings import resolve_device, sampling
from realsr_r1.rewards.scoring import REWARDS
from realsr_r1.rewards.understanding import tag_vocabulary
from realsr_r1.train.data import (
    DataError,
    ShardStream,
    load_annotations,
    shard_keys,
    shard_urls,
    truth,
)
from realsr_r1.unseen import unseen_benchmark
from realsr_r1.vlcot import IMAGE_BLOCKS, VLCoT
from stages.common import UsageError, run_stage

ANNOTATIONS = Path("data/annotations")

MODELS = {"sft": Path("models/sft"), "grpo": Path("models/grpo")}
METRICS = Path("metrics/evaluate.json")
REPORTS = Path("reports/evaluate")
SHEET_METHODS = ["bicubic", "realesrgan", "sft", "grpo"]  # LR | these (when run) | GT
# the report's curves: title -> (csv, columns)
CURVES = {
    "SFT train loss": (Path("plots/sft/train.csv"), ["loss", "text_loss", "image_loss"]),
    "SFT val loss": (Path("plots/sft/val.csv"), ["loss", "text_loss", "image_loss"]),
    "GRPO rewards": (Path("plots/grpo/train.csv"), ["reward", "format_mean", "degradation_mean", "generation_mean"]),
}
log = logging.getLogger("stages.evaluate")


def main(params: Params) -> None:
    e = params.evaluate
    for name, path in MODELS.items():
        if not (path / "policy.json").is_file():
            raise UsageError(f"{path}: no policy to evaluate (run the {name} stage)")
    device = resolve_device(e.device)
    policies = {name: load_policy(path, device).eval() for name, path in MODELS.items()}
    roll = sampling(params, policies["grpo"])
    metric_set = MetricSet(Path(e.weights_dir) if e.weights_dir else None)
    curves = training_curves()
    results = {"val": evaluate_val(params, policies, roll, metric_set, curves)}
    if e.unseen:
        bench = unseen_benchmark(wheel_photos(UNSEEN_PHOTOS), params, e.seed)
        results["unseen"] = evaluate_benchmark(params, bench, policies, roll, metric_set, curves, others={})
    for folder in e.benchmarks:
        name = Path(folder).name
        if name in results:
            raise UsageError(f"evaluate.benchmarks: two benchmarks named {name!r} (folder names must differ)")
        try:
            bench = bench_lib.load_benchmark(folder, policies["grpo"].scale)
        except BenchmarkError as err:
            raise UsageError(f"evaluate.benchmarks: {err}") from None
        results[name] = evaluate_benchmark(params, bench, policies, roll, metric_set, curves, others=e.methods)
    write_json(METRICS, {name: table(result) for name, result in results.items()})
    for name, result in results.items():
        psnr = {m: result.means[m].get("psnr") or float("nan") for m in ("bicubic", "sft", "grpo")}
        log.info("%s (%d images): PSNR-Y bicubic %.2f, SFT %.2f, GRPO %.2f dB", name, len({r["image"] for r in result.rows}),
                 psnr["bicubic"], psnr["sft"], psnr["grpo"])  # fmt: skip


def reference_methods(params: Params, bench: Benchmark, policies: dict[str, Policy]) -> dict[str, bench_lib.Method]:
    """What the models are compared with: bicubic, the tokenizer's base, Real-ESRGAN when installed,
    and on paired benchmarks the tokenizer's ceiling (the GT's own codes)."""
    tokenizer = policies["grpo"].image_tokenizer
    methods = {"bicubic": bench_lib.bicubic_method, "base": bench_lib.base_method(tokenizer, bench.problems)}
    if bench.paired:
        methods["tokenizer"] = bench_lib.tokenizer_method(tokenizer, bench.problems)
    return methods | bench_lib.realesrgan_methods(params.threads, bench.problems)


def evaluate_val(
    params: Params, policies: dict[str, Policy], roll: Sampling, metric_set: MetricSet, curves: dict[str, np.ndarray]
) -> Result:
    """The val shards: one batched rollout per model, both decodings, the models' own rewards."""
    e = params.evaluate
    keys, samples = val_samples(params)
    bench = Benchmark(Path("val"), True, [Pair(k, s.lr, s.truth.gt) for k, s in zip(keys, samples, strict=True)])
    methods = reference_methods(params, bench, policies)
    outputs: dict[str, PolicyOutputs] = {}
    for name, policy in policies.items():
        log.info("val: rolling out %s on %d photos", name, len(samples))
        outputs[name] = out = final_images(policy, samples, roll, 1, e.seed, e.batch_size)
        methods[name] = bench_lib.outputs_method(dict(zip(keys, out.expected, strict=True)))
        methods[f"{name}_sampled"] = bench_lib.outputs_method(dict(zip(keys, out.sampled, strict=True)))
    result = bench_lib.evaluate(bench, methods, policies["grpo"].scale, metric_set)
    for name, out in outputs.items():
        rewards = out.rewards(params.rewards)
        own = {k: {f"reward_{r}": rewards[r][i] for r in (*REWARDS, "total")} for i, k in enumerate(keys)}
        bench_lib.add_scores(result, name, own)
        bench_lib.add_scores(result, f"{name}_sampled", own)  # one rollout: the same chain and rewards
    rollouts = {name: [r for r, _ in out.rollouts] for name, out in outputs.items()}
    completions = {name: [c for r in rs for c in r.completions] for name, rs in rollouts.items()}
    chains = {name: [c for r in rs for c in r.chains] for name, rs in rollouts.items()}
    captions = {name: {k: caption(chain) for k, chain in zip(keys, chains[name], strict=True)} for name in policies}
    second = {
        k: [(f"grpo {block.removesuffix('_image')}", image) for block, image in zip(IMAGE_BLOCKS, c.images, strict=False)]
        for k, c in zip(keys, completions["grpo"], strict=True)
        if len(c.images) == len(IMAGE_BLOCKS)
    }
    spec = SheetSpec([m for m in SHEET_METHODS if m in methods], captions, second, e.sheets)
    write_report(result, REPORTS / "val", {p.name: p.lr for p in bench.pairs}, {p.name: p.hr for p in bench.pairs}, spec, curves,
                 "RealSR-R1 evaluation: val shards")  # fmt: skip
    return result


def evaluate_benchmark(
    params: Params, bench: Benchmark, policies: dict[str, Policy], roll: Sampling, metric_set: MetricSet,
    curves: dict[str, np.ndarray], others: dict[str, str],
) -> Result:  # fmt: skip
    """Whole photos (a benchmark folder, paired or LR only, or the unseen photos): the models
    through the tiled upscaler, with expected decoding; `others`: NAME -> folder of another
    method's outputs, one subfolder per benchmark (`evaluate.methods`, for the folders only)."""
    e = params.evaluate
    scale = policies["grpo"].scale
    name = bench.root.name
    methods = reference_methods(params, bench, policies)
    for model, policy in policies.items():
        methods[model] = bench_lib.policy_method(policy, roll, "expected", seed=e.seed)
    for method, outputs in others.items():
        if method in methods:
            raise UsageError(f"evaluate.methods: the name {method!r} is taken")
        try:
            methods[method] = bench_lib.folder_method(Path(outputs) / name, bench.problems)
        except BenchmarkError as err:
            raise UsageError(f"evaluate.methods.{method}: {err}") from None
    result = bench_lib.evaluate(bench, methods, scale, metric_set)
    spec = SheetSpec([m for m in methods if m not in ("tokenizer",)], limit=e.sheets)
    write_report(result, REPORTS / name, {p.name: p.lr for p in bench.pairs}, {p.name: p.hr for p in bench.pairs},
                 spec, curves, f"RealSR-R1 evaluation: {name}")  # fmt: skip
    return result


def val_samples(params: Params) -> tuple[list[str], list[EvalSample]]:
    """`val_samples` val samples evenly spread over the split (the set every stage scores), with their truths."""
    e = params.evaluate
    try:
        urls = {split: shard_urls(e.shards, split) for split in ("train", "val")}
        notes = {split: load_annotations(ANNOTATIONS / f"{split}.jsonl", shard_keys(urls[split])) for split in urls}
    except DataError as err:
        raise UsageError(str(err)) from None
    tags = tag_vocabulary(r.tags for r in notes["train"].values())
    stream = ShardStream(urls["val"], notes["val"], 1, e.seed, shuffle=False, per_rank=False)
    val = evenly_spaced(list(stream), params.val_samples)
    return [s.key for s in val], [EvalSample(s.lr, truth(s, tags)) for s in val]


def caption(chain: VLCoT | None) -> str:
    """The model's degradation text and rough understanding, as shown under its image."""
    if chain is None:
        return "(chain not finished or not parsable)"
    return f"degradation: {chain.degradation}\nrough: {chain.rough_understand}"


def table(result: Result) -> dict:
    """One benchmark's block of metrics/evaluate.json: method -> metric -> mean; skipped metrics
    are listed by name (never written as 0) and metrics a method lacks are left out."""
    block: dict = {"images": len({r["image"] for r in result.rows})}
    if result.skipped:
        block["skipped"] = ", ".join(result.skipped)
    for method in result.methods:
        block[method] = {k: v for k, v in result.means[method].items() if v is not None}
    return block


def training_curves() -> dict[str, np.ndarray]:
    """The SFT and GRPO curves the report shows (from the training stages' CSVs)."""
    out = {}
    for title, (path, columns) in CURVES.items():
        if not path.is_file():
            log.warning("%s: not found, the report has no %r curve", path, title)
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        series = {c: [float(r[c]) for r in rows] for c in columns if rows and c in rows[0]}
        out[title] = curve_png(title, [float(r["step"]) for r in rows], series)
    return out


if __name__ == "__main__":
    run_stage(main)
