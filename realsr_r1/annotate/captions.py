"""What an annotation backend produces per GT image: three descriptions, coarse to fine, and tags."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

_SPLIT = re.compile(r"[,;\n]|\band\b")
_EDGE = re.compile(r"^[\s\-\*\d\.\)\(:\"']+|[\s\.\"':]+$")


@dataclass(frozen=True)
class Captions:
    """Descriptions of a GT at 1/4, 1/2 and full size, and the objects in it (the tags)."""

    rough_understand: str
    middle_understand: str
    final_understand: str
    tags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"] = list(self.tags)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Captions:
        return cls(
            obj["rough_understand"], obj["middle_understand"], obj["final_understand"], tuple(obj["tags"])
        )


@dataclass(frozen=True)
class Outcome:
    """A backend's answer for one sample: captions, or None and why; status annotated | cached | failed."""

    captions: Captions | None
    status: str
    error: str | None = None


def clean_text(text: str) -> str:
    """One printable line, single spaces, no VLCoT tags (a caption lands inside a text block)."""
    text = re.sub(r"</?[a-z_]+>|<\|image\|>", " ", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" and ch != "\ufffd" else " " for ch in text)
    return " ".join(text.split())


def parse_tags(text: str, max_tags: int) -> tuple[str, ...]:
    """A model's tag answer ("a cat, two dogs and grass") -> distinct lower-case tags, in order."""
    out: dict[str, None] = {}
    for raw in _SPLIT.split(clean_text(text).lower()):
        tag = _EDGE.sub("", raw.strip())
        if tag and len(tag) <= 40:
            out[tag] = None
    return tuple(out)[:max_tags]
