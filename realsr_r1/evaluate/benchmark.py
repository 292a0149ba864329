"""Score super-resolution methods on a benchmark folder with the protocol of `evaluate.protocol`.

A benchmark is either paired (the RealSR / DRealSR layout: `LR/` and `HR/` holding the same
names, HR = scale x LR) or LR-only (`LR/`, or photos directly in the folder): no-reference
metrics only. A file that cannot be used (no HR, unreadable, wrong size, a method without that
output) is one line in `problems` (and the log); the rest is scored.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from realsr_r1.data.images import PhotoError, read_photo, write_png
from realsr_r1.evaluate.protocol import METRICS, MetricSet
from realsr_r1.tokenizers.base import bicubic
from realsr_r1.tokenizers.image import to_tensor, to_uint8

log = logging.getLogger(__name__)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class BenchmarkError(ValueError):
    """A benchmark that cannot be evaluated at all; the message names the folder."""


@dataclass(frozen=True)
class Pair:
    name: str  # file stem, the key matching LR, HR and every method's output
    lr: np.ndarray
    hr: np.ndarray | None


@dataclass
class Benchmark:
    root: Path
    paired: bool
    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)


def _photos(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in EXTENSIONS}


def _problem(problems: list[str], line: str) -> None:
    log.warning("%s", line)
    problems.append(line)


def _read(path: Path, problems: list[str]) -> np.ndarray | None:
    try:
        return read_photo(path)
    except (PhotoError, OSError) as err:
        _problem(problems, f"{path}: unreadable ({err}), not scored")
        return None


def load_benchmark(root: str | Path, scale: int) -> Benchmark:
    """The usable pairs of a benchmark folder, and one line for each file that is not."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such benchmark folder")
    lr_dir, hr_dir = root / "LR", root / "HR"
    paired = hr_dir.is_dir()
    lr_files = _photos(lr_dir if lr_dir.is_dir() else root)
    if not lr_files:
        where = lr_dir if lr_dir.is_dir() else root
        raise BenchmarkError(f"{where}: no photos ({' '.join(EXTENSIONS)}); expected LR/ and HR/ with matching names, or LR photos only")
    hr_files = _photos(hr_dir) if paired else {}
    bench = Benchmark(root, paired, [])
    for name in sorted(set(hr_files) - set(lr_files)):
        _problem(bench.problems, f"{hr_files[name]}: no LR/{name}.*, not scored")
    for name, lr_path in lr_files.items():
        if paired and name not in hr_files:
            _problem(bench.problems, f"{lr_path}: no HR/{name}.*, not scored")
            continue
        lr = _read(lr_path, bench.problems)
        hr = _read(hr_files[name], bench.problems) if paired else None
        if lr is None or (paired and hr is None):
            continue
        if hr is not None and hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            _problem(
                bench.problems,
                f"{hr_files[name]}: HR {hr.shape[1]}x{hr.shape[0]} is not {scale} x LR {lr.shape[1]}x{lr.shape[0]}, not scored",
            )
            continue
        bench.pairs.append(Pair(name, lr, hr))
    if not bench.pairs:
        raise BenchmarkError(f"{root}: none of its {len(lr_files)} photos can be scored: " + "; ".join(bench.problems))
    return bench


# A method: (pair, output size HxW) -> uint8 RGB output, or None when it has none for that pair
Method = Callable[[Pair, tuple[int, int]], np.ndarray | None]


def bicubic_upscale(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bicubic baseline, the same upsampling the residual image codes are relative to."""
    return to_uint8(bicubic(to_tensor(lr), size))[0]


def bicubic_method(pair: Pair, size: tuple[int, int]) -> np.ndarray:
    return bicubic_upscale(pair.lr, size)


def folder_method(folder: str | Path, problems: list[str]) -> Method:
    """Another method's outputs: files in `folder` named like the LR photos (any image extension)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkError(f"{folder}: no such folder of method outputs")
    files = _photos(folder)

    def run(pair: Pair, size: tuple[int, int]) -> np.ndarray | None:
        if pair.name not in files:
            _problem(problems, f"{folder}: no output for {pair.name}, not scored")
            return None
        out = _read(files[pair.name], problems)
        if out is not None and out.shape[:2] != size:
            _problem(problems, f"{files[pair.name]}: {out.shape[1]}x{out.shape[0]}, expected {size[1]}x{size[0]}, not scored")
            return None
        return out

    return run


def tokenizer_method(tokenizer: Any, problems: list[str]) -> Method:
    """The GT through the image tokenizer's own codes (given the LR): the ceiling of a model that
    decodes through it. Paired benchmarks only; a size the tokenizer cannot take is one line."""

    def run(pair: Pair, size: tuple[int, int]) -> np.ndarray | None:
        if pair.hr is None:
            return None
        try:
            return to_uint8(tokenizer.reconstruct(to_tensor(pair.hr), to_tensor(pair.lr)))[0]
        except ValueError as err:
            _problem(problems, f"tokenizer/{pair.name}: {err}, not scored")
            return None

    return run


def base_method(tokenizer: Any, problems: list[str]) -> Method:
    """The image tokenizer's base alone (what residual codes add to: learned filters or bicubic):
    what a policy's expected decoding falls back to where it knows nothing."""

    def run(pair: Pair, size: tuple[int, int]) -> np.ndarray | None:
        try:
            return to_uint8(tokenizer.base(to_tensor(pair.lr), size))[0]
        except ValueError as err:
            _problem(problems, f"base/{pair.name}: {err}, not scored")
            return None

    return run


def realesrgan_methods(threads: int, problems: list[str]) -> dict[str, Method]:
    """{"realesrgan": Real-ESRGAN x4plus (`evaluate.realesrgan`)} when its extra is installed, else
    nothing and a line in `problems` saying why. x4 only: a benchmark of another scale is one line."""
    from realsr_r1.evaluate import realesrgan

    if (why := realesrgan.unavailable()) is not None:
        _problem(problems, f"realesrgan skipped: {why}")
        return {}
    model = realesrgan.RealESRGAN(threads)

    def run(pair: Pair, size: tuple[int, int]) -> np.ndarray | None:
        out = model.upscale(pair.lr)
        if out.shape[:2] != size:
            _problem(problems, f"realesrgan: upscales x4, {pair.name} needs {size[1]}x{size[0]}, not scored")
            return None
        return out

    return {"realesrgan": run}


def outputs_method(outputs: dict[str, np.ndarray]) -> Method:
    """Outputs made beforehand (e.g. one batched rollout of every photo), looked up by photo name."""
    return lambda pair, size: outputs.get(pair.name)


def policy_method(policy: Any, sampling: Any, decode: str, seed: int = 0, overlap: int = 4) -> Method:
    """A policy checkpoint through the tiled upscaler, with `decode` (expected | sample) image decoding."""
    import torch

    from realsr_r1.evaluate.val import decoding
    from realsr_r1.policy.upscale import upscale

    def run(pair: Pair, size: tuple[int, int]) -> np.ndarray:
        with decoding(policy, decode), torch.no_grad():
            return upscale(policy, pair.lr, sampling, seed=seed, overlap=overlap).images["final_image"]

    return run


@dataclass
class Result:
    """Per-image rows, per-method means (None: skipped or never scored), and what went wrong."""

    benchmark: str
    paired: bool
    crop_border: int
    methods: list[str]
    metrics: list[str]  # in table order, skipped ones included
    rows: list[dict[str, Any]]
    means: dict[str, dict[str, float | None]]
    skipped: dict[str, str]
    problems: list[str]
    outputs: dict[str, dict[str, np.ndarray]] = field(repr=False, default_factory=dict)  # method -> name -> image

    def as_dict(self) -> dict[str, Any]:
        keys = ("benchmark", "paired", "crop_border", "methods", "metrics", "means", "skipped", "problems")
        return {k: getattr(self, k) for k in keys} | {"images": len({r["image"] for r in self.rows})}


def _mean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(got)) if got else None


def evaluate(
    bench: Benchmark,
    methods: dict[str, Method],
    scale: int,
    metrics: MetricSet,
    progress: bool = True,
    batch_size: int = 32,
) -> Result:
    """Run every method on every pair, then score each method's outputs in batches of one size
    (each metric runs once per batch, `scale` px cropped at each edge); FID per method over the whole set."""
    problems = bench.problems
    metrics.unscored.clear()  # the notes of this benchmark only
    crop_border = scale
    outputs: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    hrs = {p.name: p.hr for p in bench.pairs}
    bar = tqdm(total=len(bench.pairs) * len(methods), desc="evaluate", unit="image", disable=not progress)
    for pair in bench.pairs:
        size = (pair.lr.shape[0] * scale, pair.lr.shape[1] * scale)
        for method, run in methods.items():
            bar.set_postfix_str(f"{method}: {pair.name}", refresh=False)
            out = run(pair, size)
            bar.update(1)
            if out is not None:
                outputs[method][pair.name] = out
    bar.close()
    rows = []
    for method, images in outputs.items():
        by_size: dict[tuple[int, ...], list[str]] = {}
        for name, image in images.items():
            by_size.setdefault(image.shape, []).append(name)
        for names in by_size.values():
            for start in range(0, len(names), batch_size):
                part = names[start : start + batch_size]
                rows += _score(metrics, method, part, images, hrs if bench.paired else None, crop_border, problems)
    order = {p.name: i for i, p in enumerate(bench.pairs)}
    rows.sort(key=lambda r: (order[r["image"]], list(methods).index(r["method"])))
    for why, names in metrics.unscored.items():
        shown = ", ".join(names) if len(names) <= 5 else f"{len(names)} images ({', '.join(names[:3])}, ...)"
        _problem(problems, f"{why}: not scored for {shown}")
    ran = [m.name for m in metrics.active(bench.paired)]
    means = {method: {k: _mean(r.get(k) for r in rows if r["method"] == method) for k in ran} for method in methods}
    if bench.paired and "fid" not in metrics.skipped:
        for method in methods:
            means[method]["fid"] = _set_fid(metrics, outputs[method], {p.name: p.hr for p in bench.pairs})
    shown = [m.name for m in METRICS if bench.paired or not m.full_reference]
    for method in methods:  # skipped metrics: None, never 0
        means[method] = {k: means[method].get(k) for k in shown}
    skipped = {k: v for k, v in metrics.skipped.items() if k in shown}
    return Result(str(bench.root), bench.paired, crop_border, list(methods), shown, rows, means, skipped, problems, outputs)


def add_scores(result: Result, method: str, scores: dict[str, dict[str, float]]) -> None:
    """Scores a method brings itself (a policy's own rewards on the val shards), per image, into
    the rows, the columns and the means; methods without them show none ("-")."""
    keys = list(next(iter(scores.values()), {}))
    result.metrics += [k for k in keys if k not in result.metrics]
    for row in result.rows:
        if row["method"] == method and row["image"] in scores:
            row.update(scores[row["image"]])
    for m in result.methods:
        for k in keys:
            result.means[m].setdefault(k, None)
    result.means[method].update({k: _mean(s[k] for s in scores.values()) for k in keys})


def _score(
    metrics: MetricSet,
    method: str,
    names: list[str],
    images: dict[str, np.ndarray],
    hrs: dict[str, np.ndarray | None] | None,
    crop_border: int,
    problems: list[str],
) -> list[dict[str, Any]]:
    """Rows of one batch; when the batch fails, image by image, so only the bad ones are lost."""
    gts = None if hrs is None else [hrs[n] for n in names]
    try:
        scores = metrics.score_batch([images[n] for n in names], gts, crop_border, names)
    except ValueError as err:
        if len(names) == 1:
            _problem(problems, f"{method}/{names[0]}: {err}, not scored")
            return []
        return [row for n in names for row in _score(metrics, method, [n], images, hrs, crop_border, problems)]
    return [{"method": method, "image": n, **row} for n, row in zip(names, scores, strict=True)]


def _set_fid(metrics: MetricSet, outputs: dict[str, np.ndarray], gts: dict[str, np.ndarray]) -> float | None:
    with tempfile.TemporaryDirectory(prefix="realsr-fid-") as tmp:
        for name, image in outputs.items():
            write_png(Path(tmp, "out", f"{name}.png"), image)
            write_png(Path(tmp, "gt", f"{name}.png"), gts[name])
        return metrics.fid(Path(tmp, "out"), Path(tmp, "gt"))


def table_rows(result: Result) -> Sequence[Sequence[str]]:
    """The Table 1 layout as text: a header, then one row per method (skipped metrics: "skipped")."""
    from realsr_r1.evaluate.protocol import BY_NAME

    head = ["method"] + [f"{BY_NAME[k].label} {'↑' if BY_NAME[k].higher_better else '↓'}" for k in result.metrics]
    body = []
    for method in result.methods:
        cells = [method]
        for k in result.metrics:
            v = result.means[method].get(k)
            cells.append("skipped" if k in result.skipped else "-" if v is None else format_value(k, v))
        body.append(cells)
    return [head, *body]


def format_value(metric: str, value: float) -> str:
    """Digits as papers print them: 2 decimals for dB and scores above 1, 4 for [0, 1] similarities."""
    return f"{value:.2f}" if metric in ("psnr", "niqe", "piqe", "musiq", "fid") else f"{value:.4f}"
