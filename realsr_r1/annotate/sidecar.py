"""The `sidecar` backend: captions and tags written by hand in a JSON file next to the photos.

Schema (`data/raw/annotations.json`): an object keyed by photo file name (relative to data/raw),
each value `{"rough_understand": str, "middle_understand": str, "final_understand": str,
"tags": [str, ...]}` (all non-empty, at least one tag). Every crop and degradation of a photo
gets that photo's captions, so they describe the main content and avoid left/right (crops are
flipped).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from realsr_r1.annotate.captions import Captions, Outcome, clean_text
from realsr_r1.data.shards import ShardSample

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


FIELDS = ("rough_understand", "middle_understand", "final_understand")
WAYS_ON = (
    "Either put an annotations.json at the root of data.source: an object keyed by photo file name, "
    "each {rough_understand, middle_understand, final_understand: non-empty text, tags: [words]} "
    "(schema in docs/rewards.md; `realsr annotate-template SOURCE` writes one with every photo's name "
    "to fill in), or caption with a local vision-language model: annotate.backend: vlm and "
    "annotate.vlm.model: a folder that transformers' from_pretrained loads."
)


def sidecar_template(names: Sequence[str]) -> dict[str, dict]:
    """A sidecar skeleton for `names`: each photo with empty captions and tags, for a person to fill."""
    return {name: {**dict.fromkeys(FIELDS, ""), "tags": []} for name in sorted(names)}


class SidecarError(ValueError):
    """A sidecar file that cannot be used; the message names the file and the key."""


class SidecarEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rough_understand: NonEmpty
    middle_understand: NonEmpty
    final_understand: NonEmpty
    tags: Annotated[list[NonEmpty], Field(min_length=1)]

    def captions(self) -> Captions:
        return Captions(
            clean_text(self.rough_understand),
            clean_text(self.middle_understand),
            clean_text(self.final_understand),
            tuple(dict.fromkeys(t.lower() for t in self.tags)),
        )


def load_sidecar(path: str | Path) -> dict[str, Captions]:
    """Read and validate a sidecar file into captions per photo name; errors name file and key."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SidecarError(f"{path}: sidecar file not found. {WAYS_ON}") from None
    except json.JSONDecodeError as err:
        raise SidecarError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(raw, dict):
        raise SidecarError(f"{path}: top level must be an object keyed by photo file name")
    out = {}
    for name, entry in raw.items():
        try:
            out[name] = SidecarEntry.model_validate(entry).captions()
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in (name, *e["loc"]))
            raise SidecarError(f"{path}: key '{key}': {e['msg']}") from None
    return out


class SidecarBackend:
    """Looks each sample's source photo up in the sidecar; a photo not listed is a failure."""

    name = "sidecar"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries = load_sidecar(self.path)

    def caption(self, samples: Sequence[ShardSample]) -> list[Outcome]:
        """Per sample: the captions of its source photo (`meta["source"]`), or a failure naming it."""
        out = []
        for sample in samples:
            source = sample.meta.get("source")
            if source in self.entries:
                out.append(Outcome(self.entries[source], "annotated"))
            else:
                out.append(Outcome(None, "failed", f"photo {source!r} is not in {self.path}"))
        return out
