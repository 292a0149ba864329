"""The token layout of a VLCoT sequence: one vocabulary for text and image codes.

Vocabulary: the text tokenizer's ids first, then one id per image code
(`code_offset + code`), as in Lumina-mGPT / PURE. A sequence is

    <|bos|> prompt-before <LR> prompt-after | completion

where `<LR>` is the LR photo: `<|image_start|> <|lr_patch|> x n <|image_end|>` (projector
input: each slot's embedding gets the projected pixels of one LR patch, raster order) or an
image segment of codes (code input). An image segment is

    <|image_start|> <|grid_h|> <|grid_w|> (c c ... c <|row_end|>) x h <|image_end|>

The completion is a fixed *program* of slots, the same for every sample:

    <degradation> TEXT </degradation> <rough_understand> TEXT </rough_understand>
    <rough_image> IMAGE(h/4) </rough_image> <middle_understand> TEXT </middle_understand>
    <middle_image> IMAGE(h/2) </middle_image> <final_understand> TEXT </final_understand>
    <final_image> IMAGE(h) </final_image> <|eos|>

Tags, image structure tokens and eos are *forced* (log-prob 0, not trained by RL); a TEXT slot
is sampled from the non-special text tokens plus its own closing tag and ends when that tag
is drawn (or is closed by force at `max_text_tokens`, which marks the sample truncated); an
IMAGE slot is sampled from the image codes only. So every finished sample is well-formed
with exactly h*w codes per image; only the `max_new_tokens` guard leaves one unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerFast

from realsr_r1.tokenizers import text as tt
from realsr_r1.vlcot import BLOCKS, IMAGE_BLOCKS, IMAGE_TOKEN, PROMPT, TEXT_BLOCKS

FORCED, IMAGE = 0, 1  # slot kinds; text slot kinds are 2 + index in TEXT_BLOCKS
N_KINDS = 2 + len(TEXT_BLOCKS)


def text_kind(block: str) -> int:
    return 2 + TEXT_BLOCKS.index(block)


@dataclass(frozen=True)
class Program:
    """The completion's slots: kind per slot and the token a forced / closing slot stands for."""

    kinds: torch.Tensor  # (S + 1,) long; the last slot is a sentinel (forced pad) for finished rows
    tokens: torch.Tensor  # (S + 1,) long: the forced token, or the closing tag of a text slot

    @property
    def length(self) -> int:
        return len(self.kinds) - 1


class Layout:
    """Ids, the allowed-token table per slot kind, prompt building and the completion program."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        codebook_size: int,
        image_grids: dict[str, tuple[int, int]],
        lr_slots: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.text_vocab = len(tokenizer)
        self.codebook_size = codebook_size
        self.vocab_size = self.text_vocab + codebook_size
        self.code_offset = self.text_vocab
        self.image_grids = image_grids  # block -> (h, w) in codes
        self.lr_slots = lr_slots  # projector input: number of LR patch slots
        max_grid = max(max(g) for g in image_grids.values())
        vocab = tokenizer.get_vocab()
        missing = [t for t in tt.special_tokens(max_grid) if t not in vocab]
        if missing:
            raise ValueError(f"text tokenizer lacks the layout tokens {missing[:3]} (train it with max_grid >= {max_grid})")
        ids = tokenizer.convert_tokens_to_ids
        self.bos, self.eos, self.pad = ids(tt.BOS), ids(tt.EOS), ids(tt.PAD)
        self.image_start, self.image_end, self.row_end = ids(tt.IMAGE_START), ids(tt.IMAGE_END), ids(tt.ROW_END)
        self.lr_patch, self.image_placeholder = ids(tt.LR_PATCH), ids(IMAGE_TOKEN)
        self.open = {b: ids(f"<{b}>") for b in BLOCKS}
        self.close = {b: ids(f"</{b}>") for b in BLOCKS}
        self.grid = {n: ids(tt.grid_token(n)) for n in range(1, max_grid + 1)}
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_encoder.values())))
        self.allowed = self._allowed_table()
        self.blocked = ~self.allowed  # kept so a step masks without building the negation
        self.program = self._program()

    def to(self, device: torch.device) -> Layout:
        """Move the tables the engine indexes (allowed ids, program) to `device`, in place."""
        self.special_ids, self.allowed, self.blocked = (t.to(device) for t in (self.special_ids, self.allowed, self.blocked))
        self.program = Program(self.program.kinds.to(device), self.program.tokens.to(device))
        return self

    # ----------------------------------------------------------------------------- kinds
    def _allowed_table(self) -> torch.Tensor:
        """(N_KINDS, V) bool: which ids each slot kind may sample (forced: all, replaced anyway)."""
        table = torch.zeros(N_KINDS, self.vocab_size, dtype=torch.bool)
        table[FORCED] = True
        table[IMAGE, self.code_offset :] = True
        plain_text = torch.zeros(self.vocab_size, dtype=torch.bool)
        plain_text[: self.text_vocab] = True
        plain_text[self.special_ids] = False
        for block in TEXT_BLOCKS:
            row = plain_text.clone()
            row[self.close[block]] = True
            table[text_kind(block)] = row
        return table

    def image_segment(self, codes: torch.Tensor) -> list[int]:
        """(h, w) codes -> the image segment's ids (start, h, w, rows each closed, end)."""
        h, w = codes.shape
        ids = [self.image_start, self.grid[h], self.grid[w]]
        for row in codes.tolist():
            ids += [self.code_offset + c for c in row] + [self.row_end]
        return ids + [self.image_end]

    def _program(self) -> Program:
        kinds, tokens = [], []

        def forced(token: int) -> None:
            kinds.append(FORCED)
            tokens.append(token)

        for block in BLOCKS:
            forced(self.open[block])
            if block in IMAGE_BLOCKS:
                h, w = self.image_grids[block]
                forced(self.image_start)
                forced(self.grid[h])
                forced(self.grid[w])
                for _ in range(h):
                    kinds.extend([IMAGE] * w)
                    tokens.extend([-1] * w)
                    forced(self.row_end)
                forced(self.image_end)
                forced(self.close[block])
            else:
                kinds.append(text_kind(block))
                tokens.append(self.close[block])
        forced(self.eos)
        forced(self.pad)  # sentinel
        return Program(torch.tensor(kinds), torch.tensor(tokens))

    def max_completion_length(self, max_text_tokens: int | None) -> int | None:
        """The longest completion the program allows: every text block at its cap plus its close."""
        if max_text_tokens is None:
            return None
        text_slots = len(TEXT_BLOCKS)
        return self.program.length - text_slots + text_slots * (max_text_tokens + 1)

    def slots(
        self, ptr: torch.Tensor, text_len: torch.Tensor, max_text_tokens: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective kind and forced token per row; a text slot at its length cap forces its close."""
        kind = self.program.kinds[ptr]
        if max_text_tokens is None:
            return kind, self.program.tokens[ptr]
        capped = (kind >= 2) & (text_len >= max_text_tokens)
        return torch.where(capped, FORCED, kind), self.program.tokens[ptr]

    def advance(self, ptr: torch.Tensor, text_len: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next slot per row: text slots stay until their closing tag, others move on."""
        stay = (self.program.kinds[ptr] >= 2) & (token != self.program.tokens[ptr])
        ptr = torch.where(stay, ptr, (ptr + 1).clamp(max=self.program.length))
        return ptr, torch.where(stay, text_len + 1, torch.zeros_like(text_len))

    def replay(self, completion: torch.Tensor, valid: torch.Tensor, max_text_tokens: int | None) -> torch.Tensor:
        """Effective slot kind of every completion position (B, L), as the rollout saw it.

        Raises if a sequence leaves the layout (a forced token differs, an id outside its slot's
        allowed set, or a text block longer than `max_text_tokens`).
        """
        b, length = completion.shape
        ptr = torch.zeros(b, dtype=torch.long, device=completion.device)
        text_len = torch.zeros_like(ptr)
        kinds = torch.full((b, length), FORCED, dtype=torch.long, device=completion.device)
        for t in range(length):
            kind, forced_token = self.slots(ptr, text_len, max_text_tokens)
            kinds[:, t] = kind
            tok = completion[:, t]
            wrong = ((kind == FORCED) & (tok != forced_token)) | ~self.allowed[kind, tok.clamp(0, self.vocab_size - 1)]
            bad = valid[:, t] & wrong
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"completion {row} leaves the VLCoT layout at token {t} (id {int(tok[row])}; "
                    f"a text block longer than max_text_tokens={max_text_tokens}?)"
                )
            new_ptr, new_len = self.advance(ptr, text_len, tok)
            ptr = torch.where(valid[:, t], new_ptr, ptr)
            text_len = torch.where(valid[:, t], new_len, text_len)
        return kinds

    # --------------------------------------------------------------------------- prompts
    def lr_segment(self, lr_codes: torch.Tensor | None) -> list[int]:
        """The LR's place in the prompt: projector slots, or an image segment of its codes."""
        if lr_codes is None:
            return [self.image_start] + [self.lr_patch] * self.lr_slots + [self.image_end]
        return self.image_segment(lr_codes)

    def prompt_ids(self, lr_codes: torch.Tensor | None = None, unconditional: bool = False) -> list[int]:
        """bos + the paper's prompt with the LR segment in place of its image placeholder.

        Unconditional (for CFG): the same length with the LR blanked: every patch slot or code
        becomes the `<|image|>` placeholder, so no LR pixel or code reaches the model.
        """
        before, after = PROMPT.split(IMAGE_TOKEN)
        enc = lambda s: self.tokenizer.encode(s, add_special_tokens=False)
        seg = self.lr_segment(lr_codes)
        if unconditional:
            seg = [self.image_placeholder if t >= self.code_offset or t == self.lr_patch else t for t in seg]
        return [self.bos] + enc(before) + seg + enc(after)

    # ------------------------------------------------------------------------ completions
    def completion_ids(self, texts: dict[str, str], codes: dict[str, torch.Tensor]) -> list[int]:
        """The teacher-forcing target: the program filled with the texts and image codes."""
        ids: list[int] = []
        for block in BLOCKS:
            ids.append(self.open[block])
            if block in IMAGE_BLOCKS:
                if tuple(codes[block].shape) != self.image_grids[block]:
                    raise ValueError(f"{block}: codes {tuple(codes[block].shape)}, layout wants {self.image_grids[block]}")
                ids += self.image_segment(codes[block])
            else:
                ids += tt.block_ids(self.tokenizer, texts[block])
            ids.append(self.close[block])
        return ids + [self.eos]

    def completion_text(self, ids: list[int]) -> str:
        """Text of a completion with `IMAGE_TOKEN` for each *finished* image segment, eos dropped."""
        out: list[int] = []
        in_image = False
        for t in ids:
            if t == self.image_start:
                in_image = True
            elif t == self.image_end:
                in_image = False
                out.append(self.image_placeholder)
            elif not in_image and t not in (self.eos, self.pad):
                out.append(t)
        return self.tokenizer.decode(out, skip_special_tokens=False, clean_up_tokenization_spaces=False)
