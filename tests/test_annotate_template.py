"""Own photos without a sidecar: the error names the ways on, and `realsr annotate-template` starts one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from realsr_r1.annotate.sidecar import SidecarError, load_sidecar
from realsr_r1.cli import app
from tests.helpers import SKIMAGE_DATA


def test_missing_sidecar_names_the_ways_on(tmp_path: Path) -> None:
    try:
        load_sidecar(tmp_path / "data/raw/annotations.json")
    except SidecarError as err:
        message = str(err)
    assert "sidecar file not found" in message and "\n" not in message
    for way in ("rough_understand", "docs/rewards.md", "realsr annotate-template", "annotate.backend: vlm",
                "annotate.vlm.model"):
        assert way in message


def test_template_lists_every_photo_and_fills_into_a_valid_sidecar(photo_dir: Path, tmp_path: Path) -> None:
    (photo_dir / "trip").mkdir()
    shutil.copy(SKIMAGE_DATA / "ihc.png", photo_dir / "trip" / "ihc.png")
    (photo_dir / "notes.txt").write_text("not a photo")
    runner = CliRunner()
    result = runner.invoke(app, ["annotate-template", str(photo_dir)])
    assert result.exit_code == 0, result.output
    path = photo_dir / "annotations.json"
    template = json.loads(path.read_text())
    assert sorted(template) == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "trip/ihc.png"]
    assert template["trip/ihc.png"] == {"rough_understand": "", "middle_understand": "", "final_understand": "", "tags": []}

    # unfilled, it is refused naming the photo and field; filled, it loads
    try:
        load_sidecar(path)
        raise AssertionError("an unfilled template must not load")
    except SidecarError as err:
        assert "astronaut.png.rough_understand" in str(err)
    filled = {name: {"rough_understand": "a photo", "middle_understand": "a photo of a thing",
                     "final_understand": "a photo of a thing in detail", "tags": ["thing"]} for name in template}
    path.write_text(json.dumps(filled))
    assert sorted(load_sidecar(path)) == sorted(template)

    # an existing sidecar is never overwritten without --force; -o writes elsewhere
    again = runner.invoke(app, ["annotate-template", str(photo_dir)])
    assert again.exit_code == 2 and "exists" in again.output
    assert json.loads(path.read_text()) == filled
    other = runner.invoke(app, ["annotate-template", str(photo_dir), "-o", str(tmp_path / "t.json")])
    assert other.exit_code == 0 and sorted(json.loads((tmp_path / "t.json").read_text())) == sorted(template)
    missing = runner.invoke(app, ["annotate-template", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "folder not found" in missing.output
