"""The VLCoT format module: the prompt, rendering, and the strict parser's precise errors."""

from __future__ import annotations

import numpy as np
import pytest

from realsr_r1.vlcot import (
    BLOCKS,
    IMAGE_TOKEN,
    Completion,
    VLCoT,
    VLCoTFormatError,
    build_prompt,
    extract_block,
    parse,
    render,
)


def _chain() -> VLCoT:
    return VLCoT(
        degradation="medium blur, downsample, heavy noise",
        rough_understand="two lions on a rock",
        middle_understand="two lions resting on a grey rock under a blue sky",
        final_understand="two maned lions resting on a weathered grey rock under a clear blue sky",
        rough_image=np.zeros((4, 4, 3), np.uint8),
        middle_image=np.zeros((8, 8, 3), np.uint8),
        final_image=np.zeros((16, 16, 3), np.uint8),
    )


def test_prompt_is_the_papers_with_one_image_slot() -> None:
    prompt = build_prompt()
    assert prompt.startswith("Perceive the degradation, understand the image content")
    assert prompt.count(IMAGE_TOKEN) == 1
    order = [prompt.index(f"<{b}>") for b in BLOCKS]
    assert order == sorted(order)


def test_render_then_parse_round_trips() -> None:
    chain = _chain()
    completion = render(chain)
    assert completion.text.count(IMAGE_TOKEN) == 3
    parsed = parse(completion)
    assert parsed.degradation == chain.degradation
    assert parsed.final_understand == chain.final_understand
    assert parsed.middle_image.shape == (8, 8, 3)


def _swap(text: str, a: str, b: str) -> str:
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


@pytest.mark.parametrize(
    ("mutate", "block"),
    [
        (
            lambda t: t.replace("<rough_understand>two lions on a rock</rough_understand>", ""),
            "rough_understand",
        ),
        (
            lambda t: _swap(
                t,
                "<degradation>medium blur, downsample, heavy noise</degradation>",
                "<rough_understand>two lions on a rock</rough_understand>",
            ),
            "degradation",
        ),
        (lambda t: t.replace("</degradation>", "</degradation> junk"), "rough_understand"),
        (lambda t: t + "\n<final_understand>again</final_understand>", "completion"),
        (lambda t: t.replace("</middle_understand>", ""), "middle_understand"),
    ],
    ids=["missing", "out-of-order", "junk-between", "duplicated", "unclosed"],
)
def test_parse_names_the_broken_block(mutate, block: str) -> None:
    completion = render(_chain())
    with pytest.raises(VLCoTFormatError) as err:
        parse(Completion(mutate(completion.text), completion.images))
    assert err.value.block == block


def test_image_count_must_match_tokens() -> None:
    completion = render(_chain())
    with pytest.raises(VLCoTFormatError, match="3 image tokens but 2 images"):
        parse(Completion(completion.text, completion.images[:2]))


def test_text_block_may_not_hold_an_image() -> None:
    completion = render(_chain())
    text = completion.text.replace("two lions on a rock", f"two lions {IMAGE_TOKEN}")
    with pytest.raises(VLCoTFormatError) as err:
        parse(Completion(text, (*completion.images, np.zeros((4, 4, 3), np.uint8))))
    assert err.value.block == "rough_understand"


def test_extract_block_is_lenient() -> None:
    assert (
        extract_block("noise <degradation> light  noise </degradation> more", "degradation") == "light noise"
    )
    assert extract_block("nothing here", "degradation") is None
