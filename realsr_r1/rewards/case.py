"""A scoring case on disk: one completion and its ground truth, for `realsr reward` and the docs.

`COMPLETION.json` (image paths relative to the JSON file; images are PNG/JPEG, read as RGB):

    {
      "completion": {"text": "<degradation>...</degradation> ... <final_image><|image|></final_image>",
                     "images": ["rough.png", "middle.png", "final.png"]},
      "truth": {"degradation": "medium blur, downsample, medium noise",
                "tags": ["lion", "rock"],
                "gt": "gt.png",
                "vocabulary": ["lion", "rock", "tree", ...]}
    }

`truth.vocabulary` (optional) lists the tags of the whole dataset: the understanding reward
counts every one of them that the caption mentions but the GT lacks against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realsr_r1.atomic import write_json
from realsr_r1.data.images import PhotoError, read_photo, write_png
from realsr_r1.rewards.scoring import Truth
from realsr_r1.vlcot import Completion


class CaseError(ValueError):
    """A scoring case that cannot be read; the message names the file and the key."""


def _image(base: Path, rel: object, where: str, source: Path) -> np.ndarray:
    if not isinstance(rel, str):
        raise CaseError(f"{source}: key '{where}' must be an image path")
    try:
        return read_photo(base / rel)
    except (PhotoError, OSError) as err:
        raise CaseError(f"{source}: key '{where}': {err}") from None


def read_case(path: str | Path) -> tuple[Completion, Truth]:
    """Load a completion and its truth from a case JSON (see the module docstring)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaseError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise CaseError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    try:
        comp, truth = raw["completion"], raw["truth"]
        text, images = comp["text"], comp.get("images", [])
        degradation, tags, gt = truth["degradation"], truth["tags"], truth["gt"]
    except (KeyError, TypeError) as err:
        raise CaseError(f"{path}: missing key {err}") from None
    vocabulary = truth.get("vocabulary", [])
    if not all(isinstance(v, list) for v in (images, tags, vocabulary)) or not isinstance(text, str):
        raise CaseError(
            f"{path}: completion.text must be a string, completion.images, truth.tags and truth.vocabulary lists"
        )
    base = path.parent
    pixels = tuple(_image(base, rel, f"completion.images[{i}]", path) for i, rel in enumerate(images))
    gt_pixels = _image(base, gt, "truth.gt", path)
    try:
        truth_obj = Truth.from_text(
            degradation, [str(t) for t in tags], gt_pixels, [str(v) for v in vocabulary]
        )
    except (ValueError, AttributeError) as err:
        raise CaseError(f"{path}: key 'truth.degradation': {err}") from None
    return Completion(text=text, images=pixels), truth_obj


def write_case(
    path: str | Path,
    completion: Completion,
    degradation: str,
    tags: Sequence[str],
    gt: np.ndarray,
    vocabulary: Sequence[str] = (),
) -> None:
    """Write a case JSON with its images as PNGs beside it (image_0.png, ..., gt.png)."""
    path = Path(path)
    names = []
    for i, image in enumerate(completion.images):
        names.append(f"image_{i}.png")
        write_png(path.parent / names[-1], image)
    write_png(path.parent / "gt.png", gt)
    write_json(
        path,
        {
            "completion": {"text": completion.text, "images": names},
            "truth": {"degradation": degradation, "tags": list(tags), "gt": "gt.png"}
            | ({"vocabulary": sorted(vocabulary)} if vocabulary else {}),
        },
    )
