"""What every backbone shares: a causal decoder over the layout's one id space (text ids, then
image codes), scored a chunk of positions at a time, rolled out by the engine, its image codes
decoded by the image tokenizer.

A backbone supplies four things: `embed` (ids and the LR -> input embeddings), `decoder`
(input embeddings -> hidden states, a `transformers` base model), `head` (hidden states ->
logits over the id space) and `prompts`. The tiny Llama has one head over one vocabulary; Janus
has a language head and an image-generation head, so its `head` fills each row from the head
its next token comes from. Everything else here, so SFT and GRPO see one behaviour.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from realsr_r1.policy import llama_step
from realsr_r1.policy import rollout as engine
from realsr_r1.policy.interface import Policy, PromptBatch, Rollout, Sampling, SequenceBatch, TokenScores
from realsr_r1.policy.layout import IMAGE, Layout
from realsr_r1.policy.record import TrainingRecord
from realsr_r1.tokenizers.image import ImageTokenizer, to_tensor, to_uint8
from realsr_r1.vlcot import IMAGE_BLOCKS, TEXT_BLOCKS, Completion, VLCoT, VLCoTFormatError, parse


def tokenizer_device(tokenizer: ImageTokenizer) -> torch.device:
    """Where an image tokenizer computes: its model's device (a VQ the backbone owns moves with
    it), else the CPU (the k-means codebook, and any tokenizer kept off the accelerator)."""
    model = getattr(tokenizer, "model", None)
    return next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")


class PrefixLayer(DynamicLayer):
    """One layer's KV cache: storage for `max_cache_len` positions, filled in place, of which only
    the filled prefix is returned. So a step neither concatenates keys (as a dynamic cache does)
    nor attends over every preallocated slot behind a mask (as `transformers`' static cache
    does): a step's attention costs what the filled positions cost, not the cache's capacity."""

    def __init__(self, max_cache_len: int) -> None:
        super().__init__()
        self.max_cache_len = max_cache_len
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, h, _, d = key_states.shape
        self.key_store = key_states.new_zeros(b, h, self.max_cache_len, d)
        self.value_store = value_states.new_zeros(b, h, self.max_cache_len, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.max_cache_len:
            raise ValueError(f"KV cache of {self.max_cache_len} positions is full")
        self.key_store[:, :, self.length : end] = key_states
        self.value_store[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_store[:, :, :end], self.value_store[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_cache_len

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows `indices` (finished samples leave the batch)."""
        if self.is_initialized:
            self._rows(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times in a row (a prompt's cache copied to its group)."""
        if self.is_initialized:
            self._rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def _rows(self, fn: Any) -> None:
        self.key_store, self.value_store = fn(self.key_store), fn(self.value_store)
        self.keys, self.values = self.key_store[:, :, : self.length], self.value_store[:, :, : self.length]


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool attention mask -> each position's index among its row's real tokens (0 on the
    left padding), so a left-padded prompt sees the positions an unpadded one would."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


def next_codes(kinds: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """(B, L) completion slot kinds -> (B, P + L): per input position, the index (in program
    order) of the image code it predicts, -1 where the next token is not an image code."""
    image = kinds == IMAGE
    index = torch.where(image, image.long().cumsum(1) - 1, torch.full_like(kinds, -1))
    b = len(kinds)
    return torch.cat([kinds.new_full((b, prompt_length - 1), -1), index, kinds.new_full((b, 1), -1)], 1)


def pad_completions(prompts: PromptBatch, seqs: list[list[int]], pad: int) -> SequenceBatch:
    """Right-pad completions of different lengths into one `SequenceBatch`."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return SequenceBatch(prompts, ids, mask)


class DecoderPolicy(Policy):
    """`Policy` and the engine's `StepModel` for any decoder with the layout's id space.

    The image tokenizer stays on the CPU unless the backbone owns it (images are decoded to
    uint8 there anyway); the layout's tables follow `.to(device)`."""

    score_chunk = 256  # positions whose logits `score` holds at once
    # with gradients, chunks are recomputed in the backward pass only when the whole batch's
    # float32 logits would pass this: below it the memory saved is small and the head's second pass is not
    checkpoint_logits_above = 2**27
    config: Any  # the backbone's own config dataclass; it has `lr_size` and `scale`
    layout: Layout
    image_tokenizer: ImageTokenizer
    record: TrainingRecord | None

    @property
    def lr_size(self) -> int:
        return self.config.lr_size  # every backbone's config knows its LR side and scale

    @property
    def scale(self) -> int:
        return self.config.scale

    # ------------------------------------------------------------ what a backbone supplies
    @abstractmethod
    def embed(self, ids: torch.Tensor, lr: torch.Tensor | None, next_code: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, H) input embeddings; LR slots read `lr` (rows with slots come first)."""

    @property
    @abstractmethod
    def decoder(self) -> nn.Module:
        """The base model: (inputs_embeds, attention_mask, position_ids, cache) -> last_hidden_state."""

    @property
    @abstractmethod
    def decoder_config(self) -> PretrainedConfig:
        """The decoder's config (its layer count sizes the KV cache)."""

    @abstractmethod
    def head(self, hidden: torch.Tensor, image_rows: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states -> (N, V) logits; `image_rows` (N,) bool: the next token is an image code."""

    # -------------------------------------------------------------------------- shared
    def gradient_checkpointing_enable(self) -> None:
        enable = getattr(self.decoder, "activation_checkpointing_enable", None)  # transformers' newer name
        (enable or self.decoder.gradient_checkpointing_enable)()

    def _apply(self, fn: Any, recurse: bool = True) -> DecoderPolicy:
        """`.to()`, `.cuda()`, ...: the layout's tables follow the parameters."""
        super()._apply(fn, recurse)
        self.layout.to(self.device)
        return self

    def lr_tensor(self, lr: list[np.ndarray]) -> torch.Tensor:
        """uint8 LR photos -> (B, 3, h, w) in [0, 1], checked against the model's LR side."""
        lr_t = to_tensor(list(lr))
        side = self.lr_size
        if tuple(lr_t.shape[-2:]) != (side, side):
            raise ValueError(f"LR photos must be {side}x{side}, got {lr_t.shape[-1]}x{lr_t.shape[-2]}")
        return lr_t

    def image_codes(self, images: list[np.ndarray], lr: torch.Tensor) -> torch.Tensor:
        """uint8 chain images of one size -> (N, h, w) codes (residual over bicubic(LR) if so)."""
        on = tokenizer_device(self.image_tokenizer)
        return self.image_tokenizer.encode(to_tensor(list(images)).to(on), lr.to(on)).cpu()

    def targets(self, prompts: PromptBatch, chains: list[VLCoT]) -> SequenceBatch:
        codes = {b: self.image_codes([getattr(c, b) for c in chains], prompts.lr) for b in IMAGE_BLOCKS}
        seqs = [
            self.layout.completion_ids({b: getattr(c, b) for b in TEXT_BLOCKS}, {b: codes[b][i] for b in IMAGE_BLOCKS})
            for i, c in enumerate(chains)
        ]
        return pad_completions(prompts, seqs, self.layout.pad)

    def hidden_states(
        self, ids: torch.Tensor, lr: torch.Tensor | None, mask: torch.Tensor | None, next_code: torch.Tensor | None = None, cache: Any = None
    ) -> torch.Tensor:
        """The decoder over `ids`: whole sequences, or the tokens that follow `cache`'s (which it
        fills). `mask` covers the cached positions too; None: no row is padded. One token after a
        cache (the rollout's step) takes the lean Llama step where the decoder allows it."""
        pos = None if mask is None else positions(mask)[:, -ids.shape[1] :]
        x = self.embed(ids, lr, next_code)
        if cache is not None and ids.shape[1] == 1 and llama_step.supports(self.decoder):
            position = torch.full((len(ids),), cache.get_seq_length(), device=ids.device) if pos is None else pos[:, 0]
            return llama_step.step(self.decoder, x, position, cache, mask)
        return self.decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos, cache=cache, use_cache=cache is not None).last_hidden_state

    def completion_hidden(
        self,
        prompt_ids: torch.Tensor,
        comp_ids: torch.Tensor,
        lr: torch.Tensor | None,
        mask: torch.Tensor | None,
        next_code: torch.Tensor,
        group_size: int = 1,
    ) -> torch.Tensor:
        """(R, P) prompts + (R, L) completions -> (R, L, H): the hidden states that predict each
        completion token. Rows in runs of `group_size` copies of one prompt (a GRPO group) run
        the prompt once and share its KV cache, so a group's prompt costs one row, not G
        (unless the decoder checkpoints its layers: `transformers` drops the cache then)."""
        p = prompt_ids.shape[1]
        if group_size == 1 or any(getattr(m, "gradient_checkpointing", False) for m in self.decoder.modules()):
            return self.hidden_states(torch.cat([prompt_ids, comp_ids], 1), lr, mask, next_code)[:, p - 1 : -1]
        first = slice(None, None, group_size)  # the first row of each run
        cache = DynamicCache(config=self.decoder_config)
        prompt_mask = None if mask is None else mask[first, :p]
        last = self.hidden_states(prompt_ids[first], None if lr is None else lr[first], prompt_mask, next_code[first, :p], cache)[:, -1:]
        cache.batch_repeat_interleave(group_size)
        tail = self.hidden_states(comp_ids, lr, mask, next_code[:, p:], cache)
        return torch.cat([last.repeat_interleave(group_size, dim=0), tail[:, :-1]], 1)

    def score(self, batch: SequenceBatch, sampling: Sampling) -> TokenScores:
        """Hidden states once, then the head and the log-probs a chunk of positions at a time.

        Only the chosen token's log-prob (and log Z) leave a chunk, so memory holds one chunk's
        logits, never (batch x length x vocabulary); with gradients each chunk is recomputed in
        the backward pass (activation checkpointing) for the same reason, once the batch's
        logits would pass `checkpoint_logits_above` bytes."""
        batch = batch.to(self.device)
        p, comp, valid = batch.prompt.input_ids.shape[1], batch.completion_ids, batch.completion_mask
        kinds = batch.kinds if batch.kinds is not None else self.layout.replay(comp, valid, sampling.max_text_tokens)
        prompt_ids, comp_ids = batch.prompt.input_ids, comp
        mask = batch.prompt.attention_mask
        mask = None if mask is None else torch.cat([mask, torch.ones_like(valid)], 1)
        next_code = next_codes(kinds, p)
        if sampling.cfg is not None:  # conditional and LR-blanked rows in one pass, as in the rollout
            prompt_ids, comp_ids = torch.cat([prompt_ids, batch.prompt.uncond_ids]), torch.cat([comp, comp])
            next_code = torch.cat([next_code, next_code])
            mask = None if mask is None else torch.cat([mask, mask])
        hidden = self.completion_hidden(prompt_ids, comp_ids, batch.prompt.lr, mask, next_code, batch.prompt.group_size)
        chunk = partial(self._score_chunk, sampling=sampling)
        recompute = torch.is_grad_enabled() and hidden.shape[0] * hidden.shape[1] * self.layout.vocab_size * 4 > self.checkpoint_logits_above
        lps, zs = [], []
        for part in zip(*(t.split(self.score_chunk, dim=1) for t in (hidden, comp, kinds)), strict=True):  # views, as in the blocks below
            if recompute:
                lp, z = checkpoint(chunk, *part, use_reentrant=False)
            else:
                lp, z = chunk(*part)
            lps.append(lp)
            zs.append(z)
        lp, log_z = torch.cat(lps, 1), torch.cat(zs, 1)
        return TokenScores(
            logprobs=torch.where(valid, lp, torch.zeros_like(lp)),
            text_mask=valid & (kinds >= 2),
            image_mask=valid & (kinds == IMAGE),
            log_z=log_z,
        )

    def _score_chunk(
        self, hidden: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor, sampling: Sampling
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 2B, c, H) hidden states of c positions -> (B, c) log-probs and log Z."""
        b, c = tokens.shape
        image = (kinds == IMAGE).flatten()
        image = torch.cat([image, image]) if sampling.cfg is not None else image
        logits = self.head(hidden.flatten(0, 1), image)  # (rows, V): one chunk's logits, the only big tensor
        cond, uncond = (logits[: b * c], logits[b * c :]) if sampling.cfg is not None else (logits, None)
        lp, z = engine.teacher_forced_logprobs(cond, uncond, tokens.flatten(), kinds.flatten(), self.layout, sampling)
        return lp.view(b, c), z.view(b, c)

    # ------------------------------------------------------------------- StepModel
    def prefill(
        self,
        input_ids: torch.Tensor,
        lr: torch.Tensor | None,
        cache_len: int | None,
        attention_mask: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> tuple[torch.Tensor, Any]:
        # preallocated, attended over its filled prefix only (`PrefixLayer`)
        cache = Cache(layers=[PrefixLayer(cache_len) for _ in range(self.decoder_config.num_hidden_layers)]) if cache_len else None
        first = slice(None, None, group_size)  # each prompt once, then copied to its run
        mask = None if attention_mask is None else attention_mask[first]
        last = self.hidden_states(input_ids[first], None if lr is None else lr[first], mask, cache=cache)[:, -1]
        logits = self.head(last, torch.zeros(len(last), dtype=torch.bool, device=last.device))
        if cache is not None:
            cache.batch_repeat_interleave(group_size)
        return logits.repeat_interleave(group_size, dim=0), cache

    def step(
        self,
        tokens: torch.Tensor,
        cache: Any,
        history: torch.Tensor,
        lr: torch.Tensor | None,
        need_logits: bool = True,
        next_code: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, Any]:
        image_rows = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device) if next_code is None else next_code[:, -1] >= 0
        if cache is None:  # no KV cache: the whole sequence again
            hidden = self.hidden_states(history, lr, attention_mask, next_code)
            return self.head(hidden[:, -1], image_rows), None
        hidden = self.hidden_states(tokens[:, None], lr, attention_mask, None if next_code is None else next_code[:, -1:], cache)
        if not need_logits:  # the next token is forced in every row: the cache is filled, skip the head
            return None, cache
        return self.head(hidden[:, -1], image_rows), cache

    def select(self, cache: Any, rows: torch.Tensor) -> Any:
        cache.batch_select_indices(rows)
        return cache

    # ------------------------------------------------------------------------- rollout
    def rollout(
        self, prompts: PromptBatch, group_size: int, sampling: Sampling, seed: int = 0, expected_final: bool = False
    ) -> Rollout:
        rows = prompts.to(self.device).repeat(group_size)
        expected = self.image_tokenizer.config.decode == "expected"
        raw = engine.generate(self, rows, sampling, seed, keep_image_probs=expected or expected_final)
        images = self.decode_images(raw, rows.lr, expected)
        finals = self.decode_images(raw, rows.lr, True, IMAGE_BLOCKS[-1:])[IMAGE_BLOCKS[-1]] if expected_final else None
        completions, chains = [], []
        ids_host, mask_host, finished = raw.completion_ids.cpu(), raw.completion_mask.cpu(), raw.finished.tolist()
        for i in range(len(rows)):
            ids = ids_host[i][mask_host[i]].tolist()
            done_images = tuple(images[b][i] for b in IMAGE_BLOCKS if images[b][i] is not None)
            completion = Completion(self.layout.completion_text(ids), done_images)
            completions.append(completion)
            chain = None
            if finished[i]:
                try:
                    chain = parse(completion)
                except VLCoTFormatError:
                    chain = None
            chains.append(chain)
        mask = raw.completion_mask
        return Rollout(
            batch=SequenceBatch(rows, raw.completion_ids, mask, kinds=raw.kinds),
            group=torch.arange(len(prompts), device=self.device).repeat_interleave(group_size),
            logprobs=raw.logprobs,
            text_mask=mask & (raw.kinds >= 2),
            image_mask=mask & (raw.kinds == IMAGE),
            truncated=raw.truncated,
            completions=completions,
            chains=chains,
            expected_final=finals,
        )

    def decode_images(
        self, raw: engine.RawRollout, lr: torch.Tensor, expected: bool, blocks: tuple[str, ...] = IMAGE_BLOCKS
    ) -> dict[str, list[np.ndarray | None]]:
        """Per image block, the uint8 image of each row whose block finished (else None): the
        drawn codes decoded, or (`expected`) the expected residual under their distributions.

        Decoded by the image tokenizer where its weights live: one transfer per rollout, not per step."""
        out: dict[str, list[np.ndarray | None]] = {}
        on = tokenizer_device(self.image_tokenizer)
        lr = lr.to(on)
        completion_ids, image_pos = raw.completion_ids.to(on), (raw.kinds == IMAGE).to(on)
        image_probs = raw.image_probs.to(on) if expected else None
        counts = image_pos.sum(1)
        start = 0
        for block in IMAGE_BLOCKS:
            h, w = self.layout.image_grids[block]
            end = start + h * w
            ready = (counts >= end).nonzero().flatten().tolist()
            row_images: list[np.ndarray | None] = [None] * len(lr)
            if ready and block in blocks:
                with torch.no_grad():
                    if image_probs is not None:
                        probs = image_probs[ready, start:end].reshape(len(ready), h, w, -1)
                        pixels = self.image_tokenizer.decode_expected(probs, lr[ready])
                    else:
                        codes = torch.stack([completion_ids[r][image_pos[r]][start:end] for r in ready])
                        codes = (codes - self.layout.code_offset).reshape(len(ready), h, w)
                        pixels = self.image_tokenizer.decode(codes, lr[ready])
                for r, img in zip(ready, to_uint8(pixels), strict=True):
                    row_images[r] = img
            if block in blocks:
                out[block] = row_images
            start = end
        return out
