"""The project files a stage runs, read from its import statements (AST only, nothing imported).

Why: dvc.yaml's code `deps` decide which stages `dvc repro` re-runs, so they must be exactly the
files each stage's imports reach; tests/test_dvc_deps.py checks that, and
`python -m tests.deps` prints each stage's deps list to paste into dvc.yaml.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "realsr_r1", "flows")  # the project's code; any other import is third-party


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """`a/b.py` or `a/b/__init__.py` for module `a.b` of the project; None for anything else."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:`, which only type checkers run."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return nodes


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Dotted names of the modules every import statement of `path` may load (type-checking-only
    ones aside), relative ones resolved.

    `from pkg import name` gives `pkg` and `pkg.name`: the latter only counts when it is a module."""
    parts = path.relative_to(root).with_suffix("").parts
    package = parts[:-1]  # the package a relative import starts from, for a module and an __init__.py
    names: set[str] = set()
    for node in _executed(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from ..x import y` in a/b/c.py: a.x
                start = package[: len(package) - node.level + 1]
                base = ".".join([*start, node.module] if node.module else start)
            else:
                base = node.module or ""
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names if alias.name != "*"}
    return names


def closure(module: str, root: Path = ROOT) -> set[str]:
    """Root-relative paths of the project files `python -m module` runs: its file, the files of every
    module it imports (anywhere, function-level included), transitively, and each one's parent
    packages' __init__.py."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            path = module_file(".".join(parts[:i]), root)
            if path is not None and path not in seen:
                seen.add(path)
                todo += imported_names(path, root)
    return {p.relative_to(root).as_posix() for p in seen}


def is_code(dep: str, root: Path = ROOT) -> bool:
    """A dvc.yaml dep that is project code: a .py file or a package directory under PACKAGES."""
    if dep.split("/")[0] not in PACKAGES:
        return False
    return dep.endswith(".py") or (root / dep / "__init__.py").is_file()


def stage_modules(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """stage -> (its module, its deps as listed) for the stages whose cmd is `python -m stages.NAME`."""
    return stage_modules_of(yaml.safe_load(dvc_yaml.read_text()))


def stage_modules_of(parsed: dict) -> dict[str, tuple[str, list[str]]]:
    """`stage_modules` of a parsed dvc.yaml."""
    stages = parsed["stages"]
    found = {}
    for name, spec in stages.items():
        cmd = spec.get("cmd", "").split()
        if cmd[:2] == ["python", "-m"] and len(cmd) == 3 and cmd[2].startswith("stages."):
            found[name] = (cmd[2], [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])])
    return found


def code_order(module: str) -> Callable[[str], tuple[bool, int, str]]:
    """Sort key of a stage's code deps: the stage's own file, then stages/, realsr_r1/, flows/ by path."""
    own = module.replace(".", "/") + ".py"
    return lambda dep: (dep != own, PACKAGES.index(dep.split("/")[0]), dep)


def rewrite(text: str) -> str:
    """dvc.yaml's text with each stage's code deps replaced by its closure (listed first, at the
    indent of its first dep); data deps and every comment stay where they are."""
    stages = stage_modules_of(yaml.safe_load(text))
    out, stage, in_deps, indent = [], None, False, ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        head = line[: len(line) - len(line.lstrip())]
        if len(head) == 2 and stripped.endswith(":") and not stripped.startswith("#"):
            stage, in_deps = stripped[:-1], False
        elif stage in stages and stripped == "deps:":
            in_deps, indent = True, head + "  "
            out.append(line)
            module = stages[stage][0]
            out += [f"{indent}- {dep}\n" for dep in sorted(closure(module), key=code_order(module))]
            continue
        elif in_deps and not stripped.startswith("- ") and not stripped.startswith("#"):
            in_deps = False
        if in_deps and stripped.startswith("- ") and is_code(stripped[2:].split("#")[0].strip()):
            continue
        out.append(line)
    return "".join(out)


def main() -> None:
    """`--write`: rewrite dvc.yaml's code deps from the imports; else print each stage's deps."""
    if sys.argv[1:] == ["--write"]:
        path = ROOT / "dvc.yaml"
        path.write_text(rewrite(path.read_text()))
        return
    for stage, (module, deps) in stage_modules().items():
        code = sorted(closure(module), key=code_order(module))
        listed = yaml.safe_dump(
            {stage: {"deps": code + [d for d in deps if not is_code(d)]}}, sort_keys=False
        )
        sys.stdout.write(listed)


if __name__ == "__main__":
    main()
