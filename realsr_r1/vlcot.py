"""The VLCoT text format (docs/method.md): the one place that builds and parses it.

A completion is text plus the images it contains: every image stands in the text as
`IMAGE_TOKEN` and the images follow in `Completion.images`, in the order of their tokens. The
model layer turns image tokens into code grids or pixels; this module only checks the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IMAGE_TOKEN = "<|image|>"

TEXT_BLOCKS = ("degradation", "rough_understand", "middle_understand", "final_understand")
IMAGE_BLOCKS = ("rough_image", "middle_image", "final_image")
BLOCKS = (
    "degradation",
    "rough_understand",
    "rough_image",
    "middle_understand",
    "middle_image",
    "final_understand",
    "final_image",
)
# each image block shows the GT downscaled by this factor (1/4, 1/2, full size)
IMAGE_BLOCK_DOWNSCALE = {"rough_image": 4, "middle_image": 2, "final_image": 1}

PROMPT = (
    "Perceive the degradation, understand the image content, and restore the high-quality "
    "image step by step (simulating the image restoration process from coarse to fine). "
    f"The low-quality image is as follows: {IMAGE_TOKEN}. The generation format should be as "
    "follows: <degradation> ... </degradation> <rough_understand> ... </rough_understand> "
    "<rough_image> ... </rough_image> <middle_understand> ... </middle_understand> "
    "<middle_image> ... </middle_image> <final_understand> ... </final_understand> "
    "<final_image> ... </final_image>"
)

SPECIAL_TOKENS = tuple(f"<{b}>" for b in BLOCKS) + tuple(f"</{b}>" for b in BLOCKS) + (IMAGE_TOKEN,)

_TAG = re.compile(r"</?(" + "|".join(BLOCKS) + r")>")


class VLCoTFormatError(ValueError):
    """A completion that breaks the seven-block format; `block` names where it went wrong."""

    def __init__(self, block: str, reason: str) -> None:
        super().__init__(f"{block}: {reason}")
        self.block = block
        self.reason = reason


@dataclass(frozen=True)
class Completion:
    """Raw model output: text with `IMAGE_TOKEN` placeholders and the images they stand for."""

    text: str
    images: tuple[Any, ...] = ()


@dataclass(frozen=True)
class VLCoT:
    """A parsed (or target) chain: three understanding texts, the degradation text, three images."""

    degradation: str
    rough_understand: str
    middle_understand: str
    final_understand: str
    rough_image: Any = None
    middle_image: Any = None
    final_image: Any = None


def build_prompt() -> str:
    """The RL prompt, verbatim from the paper; the LR image goes where `IMAGE_TOKEN` stands."""
    return PROMPT


def render(chain: VLCoT, sep: str = "\n") -> Completion:
    """The seven-block completion for a target chain (the SFT target)."""
    parts, images = [], []
    for block in BLOCKS:
        value = getattr(chain, block)
        if block in IMAGE_BLOCKS:
            parts.append(f"<{block}>{IMAGE_TOKEN}</{block}>")
            images.append(value)
        else:
            text = " ".join(str(value).split())
            if _TAG.search(text) or IMAGE_TOKEN in text:
                raise VLCoTFormatError(block, "text contains a block tag or an image token")
            parts.append(f"<{block}>{text}</{block}>")
    return Completion(text=sep.join(parts), images=tuple(images))


def parse(completion: Completion) -> VLCoT:
    """Strictly parse a completion into a `VLCoT`, or raise `VLCoTFormatError` saying where.

    Rules: the seven blocks appear once each, in order, with only whitespace between and around
    them; text blocks hold no tags or image tokens; image blocks hold exactly one image token
    (whitespace around it allowed); the text has exactly as many image tokens as images.
    """
    text = completion.text
    n_tokens = text.count(IMAGE_TOKEN)
    if n_tokens != len(completion.images):
        raise VLCoTFormatError("completion", f"{n_tokens} image tokens but {len(completion.images)} images")
    values: dict[str, Any] = {}
    pos, image_index = 0, 0
    for block in BLOCKS:
        open_tag, close_tag = f"<{block}>", f"</{block}>"
        start = text.find(open_tag, pos)
        if start < 0:
            raise VLCoTFormatError(block, f"missing {open_tag} after position {pos}")
        if text[pos:start].strip():
            raise VLCoTFormatError(block, f"unexpected text before {open_tag}: {text[pos:start].strip()[:40]!r}")
        body_start = start + len(open_tag)
        end = text.find(close_tag, body_start)
        if end < 0:
            raise VLCoTFormatError(block, f"{open_tag} is never closed")
        body = text[body_start:end]
        if _TAG.search(body):
            raise VLCoTFormatError(block, f"block tag inside the block: {_TAG.search(body).group(0)}")
        if block in IMAGE_BLOCKS:
            if body.strip() != IMAGE_TOKEN:
                raise VLCoTFormatError(block, "must hold exactly one image and nothing else")
            values[block] = completion.images[image_index]
            image_index += 1
        else:
            if IMAGE_TOKEN in body:
                raise VLCoTFormatError(block, "text block holds an image")
            values[block] = " ".join(body.split())
        pos = end + len(close_tag)
    if text[pos:].strip():
        raise VLCoTFormatError("completion", f"unexpected text after </final_image>: {text[pos:].strip()[:40]!r}")
    return VLCoT(**values)


def extract_block(text: str, block: str) -> str | None:
    """Lenient: the text of the first `<block>` in `text`, or None; for rewards on broken output."""
    m = re.search(rf"<{block}>(.*?)</{block}>", text, flags=re.DOTALL)
    return " ".join(m.group(1).split()) if m else None
