"""The docs stand alone: every relative link and every mention of a docs file resolves.

A link to a missing file or heading is a newcomer's dead end; so is a comment that sends them
to a document the repository does not ship.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
MENTION = re.compile(r"\bdocs/[\w.-]+\.md\b")


def _prose(path: Path) -> str:
    """The Markdown without fenced code blocks (links in code are not links)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in _prose(path).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n, name = 0, base
            while name in found:  # GitHub numbers repeated headings: x, x-1, x-2
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def test_slug_matches_github() -> None:
    assert slug("synthesize: the Real-ESRGAN second-order degradation") == (
        "synthesize-the-real-esrgan-second-order-degradation"
    )
    assert slug("Annotation (`stages/annotate.py`, `realsr_r1/annotate/`)") == (
        "annotation-stagesannotatepy-realsr_r1annotate"
    )
    assert slug("Photo sources (`data.source`)") == "photo-sources-datasource"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def _project_texts() -> list[Path]:
    files = [*DOCS, ROOT / "params.yaml", ROOT / "prefect.yaml", ROOT / "dvc.yaml", ROOT / "Makefile"]
    for folder in ("realsr_r1", "stages", "flows", "bench", "tests"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.exists()]


def test_every_docs_mention_exists() -> None:
    """Comments and docs that name a `docs/` Markdown file name one the repository ships."""
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _project_texts()
        for name in MENTION.findall(path.read_text(encoding="utf-8"))
        if not (ROOT / name).exists()
    }
    assert not missing, "mentions of missing docs:\n" + "\n".join(sorted(missing))


def test_no_internal_notes_cited() -> None:
    """The team's internal notes are not shipped, so nothing may send a reader to them."""
    needle = "PAPER" + ".md"  # split so this file does not cite it either
    citing = [str(p.relative_to(ROOT)) for p in _project_texts() if needle in p.read_text(encoding="utf-8")]
    assert not citing, f"{needle} is cited by: {citing}"


def test_package_metadata_builds_without_deprecation_warnings() -> None:
    """setuptools reads pyproject.toml without warnings (e.g. the deprecated license table)."""
    import tomllib
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    messages = [str(w.message).splitlines()[0] for w in caught]
    assert not messages, messages
    assert dist.metadata.license_expression == "Apache-2.0"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the first setuptools that reads the SPDX string
