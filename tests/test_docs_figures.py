"""The docs' generated tables equal what `make figures` (docs/figures.py) writes from the sources.

A figure copied into the docs by hand goes stale the day the pipeline runs again; a figure
edited by hand contradicts the metrics it claims to show. So every table between
`<!-- figures:NAME -->` markers is written from metrics/, params.yaml, dvc.yaml and
bench/learning.json, and the committed text must be exactly what the script would write.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _load_figures()

# where each table lives: moving or dropping one is a decision, not an accident
PLACES = {
    "README.md": {"results", "claims", "stages"},
    "docs/data.md": {"data"},
    "docs/model.md": {"tokenizer"},
    "docs/training.md": {"recipe", "sft", "grpo", "learning"},
    "docs/evaluation.md": {"evaluate"},
}


@pytest.mark.parametrize("doc", figures.documents(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_tables_are_what_make_figures_writes(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    expected = figures.fill(text, ROOT, str(doc.relative_to(ROOT)))
    diff = "".join(
        difflib.unified_diff(text.splitlines(True), expected.splitlines(True), "committed", "make figures")
    )
    assert not diff, (
        f"{doc.relative_to(ROOT)}: generated tables differ from their sources; run `make figures`:\n{diff}"
    )


def test_every_table_is_where_the_docs_expect_it() -> None:
    found = {
        str(doc.relative_to(ROOT)): {
            m.group(2) for m in figures.OPEN.finditer(doc.read_text(encoding="utf-8")) if not m.group(1)
        }
        for doc in figures.documents(ROOT)
    }
    for doc, names in PLACES.items():
        assert names <= found.get(doc, set()), (
            f"{doc}: missing tables {sorted(names - found.get(doc, set()))}"
        )
    assert set().union(*PLACES.values()) == set(figures.TABLES)


# ------------------------------------------------------------------ a copy, edited by hand
REWARDS = {f"reward_{r}": 0.5 for r in ("total", "format", "degradation", "understanding", "generation")}
EVALUATE = {
    "val": {
        "images": 32,
        "skipped": "lpips",
        "bicubic": {"psnr": 25.5, "ssim": 0.62, "gmsd": 0.17, "seams": 1.06},
        "realesrgan": {"psnr": 26.3, "ssim": 0.66, "gmsd": 0.15, "seams": 1.01},
        "base": {"psnr": 26.0, "ssim": 0.64, "gmsd": 0.16, "seams": 1.03},
        "tokenizer": {"psnr": 28.9, "ssim": 0.71, "gmsd": 0.12, "seams": 0.97},
        **{
            name: {"psnr": 24.4, "ssim": 0.55, "gmsd": 0.19, "seams": 1.1, **REWARDS}
            for name in ("sft", "grpo", "sft_sampled", "grpo_sampled")
        },
    },
    "unseen": {
        "images": 6,
        **{name: {"psnr": 26.1, "ssim": 0.7, "gmsd": 0.1, "niqe": 9.5, "piqe": 40.0, "seams": 1.02}
           for name in ("bicubic", "realesrgan", "base", "tokenizer", "sft", "grpo")},
    },
}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The docs and the sources of their tables, with a metrics/evaluate.json of known figures."""
    for rel in ("README.md", "params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    for folder, pattern in (("docs", "*.md"), ("stages", "*.py"), ("metrics", "*.json")):
        (tmp_path / folder).mkdir()
        for path in (ROOT / folder).glob(pattern):
            shutil.copy(path, tmp_path / folder / path.name)
    (tmp_path / "metrics/evaluate.json").write_text(json.dumps(EVALUATE))
    for doc in figures.documents(tmp_path):
        doc.write_text(figures.fill(doc.read_text(encoding="utf-8"), tmp_path), encoding="utf-8")
    assert figures.stale(tmp_path) == []
    return tmp_path


def test_a_figure_edited_by_hand_is_caught(copy: Path) -> None:
    readme = copy / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert "| bicubic | 25.50 dB |" in text
    readme.write_text(text.replace("| bicubic | 25.50 dB |", "| bicubic | 24.50 dB |"), encoding="utf-8")
    assert figures.stale(copy) == ["README.md"]
    readme.write_text(figures.fill(readme.read_text(encoding="utf-8"), copy), encoding="utf-8")
    assert "| bicubic | 25.50 dB |" in readme.read_text(encoding="utf-8") and figures.stale(copy) == []


def test_a_metric_changed_without_make_figures_is_caught(copy: Path) -> None:
    changed = json.loads(json.dumps(EVALUATE))
    changed["val"]["grpo"]["psnr"] = 25.9
    (copy / "metrics/evaluate.json").write_text(json.dumps(changed))
    assert figures.stale(copy) == ["README.md", "docs/evaluation.md"]


def test_a_table_without_its_source_names_the_command_that_writes_it(copy: Path) -> None:
    (copy / "metrics/evaluate.json").unlink()
    assert "`dvc repro evaluate` writes it" in figures.render("results", copy)
    assert not (copy / "bench/learning.json").exists()
    assert "`python bench/learning.py --results bench/learning.json`" in figures.render("learning", copy)


def test_learning_table_from_a_bench_record(copy: Path) -> None:
    (copy / "bench").mkdir()
    record = {
        "date": "2026-12-05",
        "machine": {"cpu": "Some CPU", "cores": 2, "load": 1.5},
        "runs": {"0:2": {"sft:final.rewards.total": 1.8}, "1:2": {"sft:final.rewards.total": 2.0},
                 "0:1": {"sft:final.rewards.total": 1.85}},
    }  # fmt: skip
    (copy / "bench/learning.json").write_text(json.dumps(record))
    table = figures.render("learning", copy)
    assert "| `sft:final.rewards.total` | 1.9000 ± 0.1414 | 0.2000 |" in table, table
    assert "2026-12-05, Some CPU, 2 cores, load 1.5" in table


def test_markers_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        figures.fill("<!-- figures:nope -->\n<!-- /figures:nope -->\n", ROOT)
    with pytest.raises(ValueError, match="not closed"):
        figures.fill("<!-- figures:results -->\ntext\n", ROOT)
    quoted = "Tables between `<!-- figures:NAME -->` markers are generated.\n"
    assert figures.fill(quoted, ROOT) == quoted
