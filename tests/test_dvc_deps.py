"""dvc.yaml's code deps are exactly the project files each stage imports (tests/deps.py): editing a
module a stage runs makes `dvc repro` re-run it, and editing one it never runs does not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.deps import ROOT, closure, is_code, stage_modules

STAGES = stage_modules()


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_the_import_closure(stage: str) -> None:
    module, deps = STAGES[stage]
    listed = {d for d in deps if is_code(d)}
    runs = closure(module)
    missing, extra = sorted(runs - listed), sorted(listed - runs)
    assert not missing and not extra, (
        f"dvc.yaml stage '{stage}': code deps are not what `python -m {module}` imports "
        "(`python -m tests.deps` prints the right lists)\n"
        f"missing: {' '.join(missing) or '-'}\n"
        f"extra: {' '.join(extra) or '-'}"
    )


def _strings(path: Path) -> set[str]:
    return {
        n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Constant)
    }


def test_assets_the_code_names_are_deps_of_a_stage_running_it() -> None:
    """A file of realsr_r1/assets that stage code names (sources.py: bundled_annotations.json) is a
    dep of some stage running that code, and a stage lists only assets its code names."""
    for asset in sorted((ROOT / "realsr_r1/assets").iterdir()):
        dep = asset.relative_to(ROOT).as_posix()
        naming = {
            s for s, (m, _) in STAGES.items() if any(asset.name in _strings(ROOT / f) for f in closure(m))
        }
        listing = {s for s, (_, deps) in STAGES.items() if dep in deps}
        assert listing <= naming, f"{dep}: listed by {sorted(listing - naming)}, whose code never names it"
        assert listing or not naming, f"{dep}: named by the code of {sorted(naming)}, a dep of none of them"


def test_closure_follows_every_import_form(tmp_path: Path) -> None:
    files = {
        "stages/__init__.py": "",
        "stages/s.py": "import numpy\nfrom realsr_r1.a import b, helper\n\ndef f():\n    import realsr_r1.lazy\n",
        "realsr_r1/__init__.py": "",
        "realsr_r1/lazy.py": "",
        "realsr_r1/a/__init__.py": "from .b import x\nhelper = 1\n",
        "realsr_r1/a/b.py": "from ..c import d\nfrom . import e as _e\n",
        "realsr_r1/a/e.py": "",
        "realsr_r1/c/__init__.py": "",
        "realsr_r1/c/d.py": "",
        "realsr_r1/c/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert closure("stages.s", tmp_path) == set(files) - {"realsr_r1/c/unused.py"}
    assert is_code("realsr_r1/a", tmp_path) and is_code("stages/s.py", tmp_path)
    assert not is_code("data/raw", tmp_path) and not is_code("realsr_r1/a/data.json", tmp_path)
