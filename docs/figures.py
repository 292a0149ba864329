"""The docs' generated figures: every table between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->` in README.md and docs/*.md, written from the files that hold the figures.

    python docs/figures.py            # rewrite the tables in place (`make figures` runs this)
    python docs/figures.py --check    # change nothing; exit 1, naming the files a rewrite would change

Sources: metrics/*.json (what `dvc repro` measured), params.yaml, dvc.yaml and the stages'
docstrings, and bench/learning.json when `python bench/learning.py --results bench/learning.json`
has written it. A table whose source is missing says which command writes it. Nothing between
the markers is edited by hand: tests/test_docs_figures.py fails when a committed table differs
from what this script writes from the committed sources.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# a marker is a line of its own (a marker quoted inside prose is not one)
BLOCK = re.compile(r"^(<!-- figures:([\w-]+) -->\n)(.*?)^(<!-- /figures:\2 -->)$", re.DOTALL | re.MULTILINE)
OPEN = re.compile(r"^<!-- (/?)figures:([\w-]+) -->$", re.MULTILINE)


class Missing(Exception):
    """A source file that is not there yet; the message says which command writes it."""


def documents(root: Path) -> list[Path]:
    """The Markdown files that may hold generated tables."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------- sources
def _json(root: Path, rel: str, command: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise Missing(f"`{rel}` is not there yet: `{command}` writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def _params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))


def _metrics(root: Path, stage: str) -> dict:
    return _json(root, f"metrics/{stage}.json", f"dvc repro {stage}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _source(*files: str) -> str:
    names = ", ".join(f"`{f}`" for f in files)
    return f"<sub>Generated from {names} by `make figures`.</sub>"


def db(x: float) -> str:
    return f"{x:.2f} dB"


def f2(x: float) -> str:
    return f"{x:.2f}"


def f3(x: float) -> str:
    return f"{x:.3f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


# ------------------------------------------------------------------------------- tables
def stages(root: Path) -> str:
    """Every stage of dvc.yaml in order: what it does (its module's first docstring sentence) and what it writes."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    rows = []
    for name, stage in spec.items():
        module = root / "stages" / f"{name}.py"
        doc = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8"))) or ""
        first = doc.split("\n\n")[0].replace("\n", " ")
        what = re.sub(rf"^Stage `{name}`:\s*", "", first).rstrip(".")
        written = [
            next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots")
            for o in stage.get(key, [])
        ]
        rows.append([f"`{name}`", what, ", ".join(f"`{w}`" for w in written)])
    return _table(["stage", "what it does", "writes"], rows) + "\n\n" + _source("dvc.yaml", "stages/*.py")


def data(root: Path) -> str:
    """The default data budget and the counts the data stages wrote."""
    p = _params(root)
    photos = _metrics(root, "ingest")["photos"]
    synth = _metrics(root, "synthesize")
    train, val = synth["train"]["samples"], synth["val"]["samples"]
    crops, per_image = p["prepare"]["crops_per_image"], p["synthesize"]["per_image"]
    gt, scale = p["prepare"]["gt_size"], p["synthesize"]["scale"]
    rows = [
        ["photos (`data.source`: " + f"`{p['data']['source']}`)", f"{photos:,}"],
        [
            "GT crops per photo (`prepare.crops_per_image`), side (`prepare.gt_size`)",
            f"{crops} crops of {gt} px",
        ],
        [
            "degradations per crop (`synthesize.per_image`), LR side",
            f"{per_image}, {gt // scale} px (x{scale})",
        ],
        ["LR/HR pairs, train / val", f"{train + val:,}: {train:,} / {val:,}"],
        ["val share of the photos (`prepare.val_fraction`)", f"{p['prepare']['val_fraction']}"],
        [
            "val samples every stage scores (`val_samples`)",
            f"{p['val_samples']}, evenly spread over the val split",
        ],
    ]
    return (
        _table(["", "default"], rows)
        + "\n\n"
        + _source("params.yaml", "metrics/ingest.json", "metrics/synthesize.json")
    )


def tokenizer(root: Path) -> str:
    """Reconstruction through the image tokenizer's own codes, per chain scale, against bicubic."""
    m = _metrics(root, "tokenizer")
    p = _params(root)
    gt, factor = p["prepare"]["gt_size"], p["tokenizer"]["image"]["factor"]
    rows = []
    for i, scale in enumerate(("rough", "middle", "final")):
        s = m["image"][scale]
        side = gt // (4 // 2**i)
        rows.append([
            f"{scale} ({side} px, {side // factor}x{side // factor} codes)",
            db(s["bicubic_psnr"]), db(s["base_psnr"]), db(s["psnr"]), f3(s["bicubic_ssim"]), f3(s["base_ssim"]), f3(s["ssim"]),
            pct(s["code_usage"]),
        ])  # fmt: skip
    codes = m["image"]["codes"]
    table = _table(
        ["scale", "bicubic PSNR-Y", "base PSNR-Y", "tokenizer PSNR-Y", "bicubic SSIM-Y", "base SSIM-Y", "tokenizer SSIM-Y", "codes used"],
        rows,
    )
    notes = (
        f"All scales: {pct(codes['usage'])} of the {p['tokenizer']['image']['codebook_size']} codes used, "
        f"perplexity {codes['perplexity']:.1f}. Text: {m['text_vocab']:,} BPE tokens; the longest text block of "
        f"the annotations is {m['longest_text_block']} tokens. Scored on the {p['val_samples']} val samples every "
        f"stage scores (of {m['val_samples']:,}); fitted on the {m['train_samples']:,} train samples' images."
    )
    return table + "\n\n" + notes + "\n\n" + _source("metrics/tokenizer.json", "params.yaml")


REWARDS = ("total", "format", "degradation", "understanding", "generation")


def _policy_rows(figs: list[dict]) -> list[list[str]]:
    """Rows of the val figures of `evaluate_policy` (sft.json's early/final, grpo.json's sft/grpo), one column each."""
    rows = [[f"{r} reward", *(f3(f["rewards"][r]) for f in figs)] for r in REWARDS]
    rows.append(
        [
            "degradation: always the most frequent train answer",
            *(f3(f["degradation_constant_answer"]) for f in figs),
        ]
    )
    rows.append(["share of samples a length guard cut", *(pct(f["truncated"]) for f in figs)])
    for key, label in (("expected", "expected decoding"), ("sampled", "sampled codes")):
        rows.append([f"final image PSNR-Y, {label}", *(db(f["psnr_y"][key]) for f in figs)])
    rows.append(["final image SSIM-Y, expected decoding", *(f3(f["ssim_y"]["expected"]) for f in figs)])
    for key, label in (("expected", "expected decoding"), ("sampled", "sampled codes")):
        rows.append([f"seam ratio of the final image, {label} (GT ~1)", *(f2(f["seams"][key]) for f in figs)])
    rows.append(
        [
            "bicubic / tokenizer ceiling, PSNR-Y",
            *(f"{db(f['psnr_y']['bicubic'])} / {db(f['psnr_y']['tokenizer'])}" for f in figs),
        ]
    )
    return rows


def sft(root: Path) -> str:
    m = _metrics(root, "sft")
    p = _params(root)
    early, final = m["early"], m["final"]
    rows = _policy_rows([early, final])
    losses = {"val_loss": "teacher-forced val loss", "train_loss": "train loss"}
    for key, label in losses.items():
        loss = m[key]
        rows.append([f"{label}, text / image", "-", f"{f2(loss['text_loss'])} / {f2(loss['image_loss'])}"])
    header = ["val", f"step {early['step']} (early)", f"step {final['step']} (end)"]
    note = (
        f"{p['val_samples']} val samples x {p['rollout']['group_size']} sampled completions each "
        f"({final['rows']} rows), rollout settings of `params.yaml`."
    )
    return _table(header, rows) + "\n\n" + note + "\n\n" + _source("metrics/sft.json", "params.yaml")


def grpo(root: Path) -> str:
    m = _metrics(root, "grpo")
    p = _params(root)
    rows = _policy_rows([m["sft"], m["grpo"]])
    note = (
        f"After {m['steps']} GRPO steps; both models on the same {p['val_samples']} val samples x "
        f"{p['rollout']['group_size']} completions with the same seeds."
    )
    return (
        _table(["val", "SFT", "GRPO"], rows)
        + "\n\n"
        + note
        + "\n\n"
        + _source("metrics/grpo.json", "params.yaml")
    )


METHODS = {
    "bicubic": "bicubic",
    "realesrgan": "Real-ESRGAN x4plus (the field's reference, pretrained)",
    "base": "tokenizer base alone (learned filters, no codes)",
    "tokenizer": "tokenizer ceiling (the GT's own codes)",
    "sft": "SFT, expected decoding",
    "grpo": "GRPO, expected decoding",
    "sft_sampled": "SFT, sampled codes",
    "grpo_sampled": "GRPO, sampled codes",
}


def _val(root: Path) -> dict:
    return _metrics(root, "evaluate")["val"]


def results(root: Path) -> str:
    """The README's headline: the evaluate stage on val, and on the unseen whole photos."""
    val = _val(root)
    rows = []
    for method, label in METHODS.items():
        if method not in val:
            continue
        m = val[method]
        total = f3(m["reward_total"]) if "reward_total" in m else "-"
        rows.append([label, db(m["psnr"]), f3(m["ssim"]), f2(m["seams"]), total])
    header = ["method (val crops)", "PSNR-Y &uarr;", "SSIM-Y &uarr;", "seams &darr; (GT ~1)", "total reward &uarr; (of 4)"]
    note = f"{val['images']} val images (64 px), one rollout each per model, the same seeds."
    return _table(header, rows) + "\n\n" + note + "\n\n" + _unseen(root) + "\n\n" + _source("metrics/evaluate.json", "params.yaml")


UNSEEN = [("psnr", "PSNR-Y &uarr;", db), ("ssim", "SSIM-Y &uarr;", f3), ("seams", "seams &darr;", f2), ("niqe", "NIQE &darr;", f2)]


def _unseen(root: Path) -> str:
    """The unseen whole photos: the models through the tiled upscaler (expected decoding)."""
    unseen = _metrics(root, "evaluate")["unseen"]
    rows = [[METHODS[m].removesuffix(", expected decoding"), *(fmt(unseen[m][k]) for k, _, fmt in UNSEEN)]
            for m in METHODS if m in unseen]  # fmt: skip
    p = _params(root)["evaluate"]
    draws = p.get("unseen_draws", 1)
    note = (f"{unseen['images'] // draws} photos never seen in training (`realsr unseen`'s), short side {p['unseen_short_side']} px, "
            f"each degraded by the pipeline {draws} times with seeded draws ({unseen['images']} pairs); "
            "the models upscale them tile by tile with expected decoding. "
            "No-reference NIQE is scored on these whole photos only.")  # fmt: skip
    return _table(["method (unseen whole photos)", *(h for _, h, _ in UNSEEN)], rows) + "\n\n" + note


def evaluate(root: Path) -> str:
    """Every method and metric of the evaluate stage on val, then the unseen photos."""
    val = _val(root)
    metrics = [("psnr", "PSNR-Y &uarr;", db), ("ssim", "SSIM-Y &uarr;", f3), ("gmsd", "GMSD &darr;", f3),
               ("seams", "seams &darr;", f2)]  # fmt: skip
    rewards = [f"reward_{r}" for r in REWARDS]
    rows = []
    for method, label in METHODS.items():
        if method not in val:
            continue
        m = val[method]
        rows.append(
            [label, *(fmt(m[k]) for k, _, fmt in metrics), *(f3(m[r]) if r in m else "-" for r in rewards)]
        )
    header = ["method", *(h for _, h, _ in metrics), *(r.removeprefix("reward_") for r in rewards)]
    skipped = val.get("skipped")
    note = f"{val['images']} val images." + (f" Skipped (no weights given): {skipped}." if skipped else "")
    return _table(header, rows) + "\n\n" + note + "\n\n" + _unseen(root) + "\n\n" + _source("metrics/evaluate.json", "params.yaml")


def recipe(root: Path) -> str:
    """The default training budget, from params.yaml."""
    p = _params(root)
    s, g, r = p["sft"], p["grpo"], p["rollout"]
    rows = [
        ["SFT", f"{s['steps']} steps x batch {s['batch_size']} x accumulation {s['grad_accum']}",
         f"{s['lr']:g}, {s['warmup_steps']} warm-up steps, {s['schedule']}", "-"],
        ["GRPO", f"{g['steps']} steps x {g['prompts']} prompts x G {r['group_size']}, {g['updates']} update per rollout",
         f"{g['lr']:g}, {g['warmup_steps']} warm-up steps, {g['schedule']}", f"{g['beta']:g}"],
    ]  # fmt: skip
    return _table(["stage", "budget", "learning rate", "KL beta"], rows) + "\n\n" + _source("params.yaml")


LEARNING = "python bench/learning.py --results bench/learning.json"


def _learning(root: Path) -> tuple[dict, int, dict[str, dict[str, float]]]:
    """bench/learning.json, the default thread count and its runs (one per training seed)."""
    path = root / "bench" / "learning.json"
    if not path.is_file():
        raise Missing(f"not measured in this checkout: `{LEARNING}` writes `bench/learning.json`")
    record = json.loads(path.read_text(encoding="utf-8"))
    threads = _params(root)["threads"]
    return record, threads, {run: figs for run, figs in sorted(record["runs"].items()) if run.endswith(f":{threads}")}


def learning(root: Path) -> str:
    """Mean ± std over training seeds, from bench/learning.json when it was written."""
    command = LEARNING
    record, threads, seeds = _learning(root)
    rows = []
    for name in next(iter(record["runs"].values())):
        values = [figs[name] for figs in seeds.values()]
        every = [figs[name] for figs in record["runs"].values()]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(
            [f"`{name}`", f"{statistics.mean(values):.4f} ± {std:.4f}", f"{max(every) - min(every):.4f}"]
        )
    machine = record.get("machine", {})
    note = (
        f"{len(seeds)} training seeds at {threads} threads ({', '.join(sorted(seeds))}; all runs: "
        f"{', '.join(sorted(record['runs']))}), {record.get('date', 'date not recorded')}, "
        f"{machine.get('cpu', 'CPU not recorded')}, {machine.get('cores', '?')} cores, load {machine.get('load', 'not recorded')}. "
        f"`{command}` measures it again."
    )
    header = ["figure (`file:key`)", f"mean ± std over {len(seeds)} seeds", "largest gap, any two runs"]
    return _table(header, rows) + "\n\n" + note + "\n\n" + _source("bench/learning.json", "params.yaml")


# the README's learning claims: (label, minuend, subtrahend, unit); each a difference per seed
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("SFT expected decoding over bicubic, PSNR-Y (val)", "evaluate:val.sft.psnr", "evaluate:val.bicubic.psnr", "dB"),
    ("GRPO expected decoding over bicubic, PSNR-Y (val)", "evaluate:val.grpo.psnr", "evaluate:val.bicubic.psnr", "dB"),
    ("GRPO expected decoding over the base alone, PSNR-Y (val)", "evaluate:val.grpo.psnr", "evaluate:val.base.psnr", "dB"),
    ("GRPO over bicubic, PSNR-Y (unseen whole photos)", "evaluate:unseen.grpo.psnr", "evaluate:unseen.bicubic.psnr", "dB"),
    ("SFT over bicubic, PSNR-Y (unseen whole photos)", "evaluate:unseen.sft.psnr", "evaluate:unseen.bicubic.psnr", "dB"),
    ("GRPO seams minus bicubic's (unseen whole photos)", "evaluate:unseen.grpo.seams", "evaluate:unseen.bicubic.seams", ""),
    ("GRPO NIQE minus bicubic's (unseen whole photos; lower is better)", "evaluate:unseen.grpo.niqe", "evaluate:unseen.bicubic.niqe", ""),
    ("GRPO over SFT, total reward (grpo.json: 4 rollouts per val image)", "grpo:grpo.rewards.total", "sft:final.rewards.total", ""),
    ("GRPO over SFT, total reward (evaluate.json: 1 rollout per val image)", "evaluate:val.grpo.reward_total", "evaluate:val.sft.reward_total", ""),
    ("GRPO over SFT, generation reward (grpo.json)", "grpo:grpo.rewards.generation", "sft:final.rewards.generation", ""),
    ("GRPO over SFT, sampled codes' PSNR-Y (grpo.json)", "grpo:grpo.psnr_y.sampled", "sft:final.psnr_y.sampled", "dB"),
    ("GRPO over SFT, PSNR-Y (val)", "evaluate:val.grpo.psnr", "evaluate:val.sft.psnr", "dB"),
    ("GRPO expected decoding over its sampled codes, PSNR-Y (val)", "evaluate:val.grpo.psnr", "evaluate:val.grpo_sampled.psnr", "dB"),
    ("GRPO sampled codes' seams minus expected decoding's (val)", "evaluate:val.grpo_sampled.seams", "evaluate:val.grpo.seams", ""),
)


def claims(root: Path) -> str:
    """The README's learning claims as differences per training seed, from bench/learning.json."""
    _, threads, seeds = _learning(root)
    rows = []
    for label, plus, minus, unit in CLAIMS:
        if any(plus not in figs or minus not in figs for figs in seeds.values()):
            continue
        diffs = [figs[plus] - figs[minus] for figs in seeds.values()]
        std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        each = ", ".join(f"{d:+.2f}" if unit else f"{d:+.3f}" for d in diffs)
        sign = "all > 0" if min(diffs) > 0 else "all < 0" if max(diffs) < 0 else "mixed"
        rows.append([label, f"{statistics.mean(diffs):+.3f} ± {std:.3f} {unit}".rstrip(), each, sign])
    note = f"Per training seed ({', '.join(run.split(':')[0] for run in seeds)}) at {threads} threads; `{LEARNING}` measures it again."
    return _table(["difference", f"mean ± std over {len(seeds)} seeds", "each seed", "sign"], rows) + "\n\n" + note + "\n\n" + _source("bench/learning.json", "params.yaml")


TABLES: dict[str, Callable[[Path], str]] = {
    "claims": claims,
    "stages": stages,
    "data": data,
    "tokenizer": tokenizer,
    "recipe": recipe,
    "sft": sft,
    "grpo": grpo,
    "results": results,
    "evaluate": evaluate,
    "learning": learning,
}


def render(name: str, root: Path) -> str:
    """The text between the markers of table `name` (a missing source: the command that writes it)."""
    try:
        body = TABLES[name](root)
    except Missing as why:
        body = f"_Not generated: {why}; then `make figures`._"
    return body.rstrip("\n") + "\n"


# ------------------------------------------------------------------------------- documents
def check_markers(text: str, where: str) -> None:
    """Every marker opens a known table and is closed, in order; raises ValueError naming the problem."""
    open_name = None
    for m in OPEN.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if name not in TABLES:
            raise ValueError(f"{where}: unknown table {name!r} (known: {', '.join(TABLES)})")
        if closing != (open_name is not None) or (closing and name != open_name):
            raise ValueError(f"{where}: marker {m.group(0)} out of order")
        open_name = None if closing else name
    if open_name is not None:
        raise ValueError(f"{where}: table {open_name!r} is not closed")


def fill(text: str, root: Path, where: str = "text") -> str:
    """`text` with every generated table rewritten from the sources under `root`."""
    check_markers(text, where)
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), root) + m.group(4), text)


def stale(root: Path) -> list[str]:
    """The documents under `root` whose tables differ from what `fill` writes (relative paths)."""
    out = []
    for doc in documents(root):
        text = doc.read_text(encoding="utf-8")
        if fill(text, root, str(doc.relative_to(root))) != text:
            out.append(str(doc.relative_to(root)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is stale")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = ap.parse_args()
    if args.check:
        behind = stale(args.root)
        if behind:
            sys.exit(f"error: generated tables out of date in {', '.join(behind)}: run `make figures`")
        return
    for doc in documents(args.root):
        text = doc.read_text(encoding="utf-8")
        new = fill(text, args.root, str(doc.relative_to(args.root)))
        if new != text:
            doc.write_text(new, encoding="utf-8")
            print(f"updated {doc.relative_to(args.root)}")


if __name__ == "__main__":
    main()
