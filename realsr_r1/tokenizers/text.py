"""The text tokenizer: byte-level BPE trained on the chain texts, with the layout's special tokens.

Trained with the `tokenizers` library on the annotation texts, the prompt and the degradation
vocabulary, and saved/loaded as a `transformers` tokenizer. Special tokens: the seven block
tags (open and close), the prompt's image placeholder, and the image layout tokens (start,
end, row end, the grid-size tokens h and w, the LR patch slot), plus bos / eos / pad.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from realsr_r1.vlcot import SPECIAL_TOKENS as VLCOT_TOKENS

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
IMAGE_START, IMAGE_END, ROW_END = "<|image_start|>", "<|image_end|>", "<|row_end|>"
LR_PATCH = "<|lr_patch|>"  # one slot per LR patch embedding (projector input path)
# saved in the tokenizer's config: the longest text block of the training annotations, in tokens,
# so a rollout's text cap can follow the data wherever the tokenizer travels (policy, release)
LONGEST_BLOCK = "longest_text_block"


def grid_token(n: int) -> str:
    """The size token for a grid side of `n` codes (the layout's h and w)."""
    return f"<|grid_{n}|>"


def special_tokens(max_grid: int) -> list[str]:
    """All special tokens in a fixed order (their ids come first in the vocabulary)."""
    layout = [BOS, EOS, PAD, IMAGE_START, IMAGE_END, ROW_END, LR_PATCH]
    return layout + list(VLCOT_TOKENS) + [grid_token(n) for n in range(1, max_grid + 1)]


def train_text_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int, max_grid: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `texts`; special tokens are never split and never merged into."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens(max_grid),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=1_000_000
    )


def load_text_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Reload a saved text tokenizer; a missing directory is a one-line error naming it."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: no text tokenizer here (missing tokenizer.json)")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def block_ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """A text block's ids as a chain holds them: whitespace collapsed, no special tokens added."""
    return tokenizer.encode(" ".join(text.split()), add_special_tokens=False)


def record_longest_block(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> int:
    """Measure the longest of `texts` in tokens and keep it in the tokenizer's saved config."""
    longest = max((len(block_ids(tokenizer, t)) for t in texts), default=0)
    tokenizer.init_kwargs[LONGEST_BLOCK] = longest
    return longest


def longest_block(tokenizer: PreTrainedTokenizerFast) -> int | None:
    """The longest training text block recorded by `record_longest_block` (None: not recorded)."""
    value = tokenizer.init_kwargs.get(LONGEST_BLOCK)
    return int(value) if value is not None else None
