"""The rollout engine: G samples per prompt, batched, KV-cached, decoded under the layout.

Every row walks the layout's completion program (`Layout.program`) with a pointer: forced
slots emit their token, text slots sample text (temperature + top-p) until their closing tag,
image slots sample image codes only (temperature, optional top-k, optional classifier-free
guidance against the LR-blanked prompt). Two length guards: a text block reaching
`max_text_tokens` is closed by force, and `max_new_tokens` stops a sample; both mark it
truncated (the format reward gives it 0). All rows step together, one token per forward, so
the state is a few tensors and a step costs no Python per row. The log-prob kept for each
token is that of the constrained, temperature-scaled distribution (before top-p / top-k),
which `constrained_logprobs` recomputes identically from a teacher-forced pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from realsr_r1.policy.interface import PromptBatch, Sampling
from realsr_r1.policy.layout import FORCED, IMAGE, Layout


class StepModel(Protocol):
    """What the engine needs of a backbone: prefill a prompt batch, then one token at a time."""

    layout: Layout

    def prefill(self, input_ids: torch.Tensor, lr: torch.Tensor | None, cache_len: int | None) -> tuple[torch.Tensor, Any]:
        """Logits of the next token (B, V) and a cache for `cache_len` positions (None: no cache)."""

    def step(self, tokens: torch.Tensor, cache: Any, history: torch.Tensor, lr: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """Feed one token per row; `history` is the whole sequence so far (for the no-cache path)."""


def guide(cond: torch.Tensor, uncond: torch.Tensor | None, image_rows: torch.Tensor, cfg: float | None) -> torch.Tensor:
    """Classifier-free guidance on image positions: uncond + cfg * (cond - uncond)."""
    if cfg is None or uncond is None:
        return cond
    guided = uncond + cfg * (cond - uncond)
    return torch.where(image_rows.unsqueeze(-1), guided, cond)


def constrained_logits(logits: torch.Tensor, kinds: torch.Tensor, layout: Layout, sampling: Sampling) -> torch.Tensor:
    """Mask each position to its slot's allowed ids and divide by its temperature."""
    masked = logits.masked_fill(~layout.allowed[kinds], float("-inf"))
    temp = torch.where(kinds == IMAGE, sampling.image_temperature, sampling.temperature)
    return masked / temp.unsqueeze(-1).to(logits.dtype)


def constrained_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor, layout: Layout, sampling: Sampling
) -> torch.Tensor:
    """Log-prob of `tokens` under the constrained distribution; 0 at forced positions."""
    logp = torch.log_softmax(constrained_logits(logits, kinds, layout, sampling).float(), dim=-1)
    picked = logp.gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(kinds == FORCED, torch.zeros_like(picked), picked)


def _filter(scaled: torch.Tensor, kinds: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Top-p on text rows and top-k on image rows (sampling only; log-probs ignore the cut)."""
    out = scaled
    if sampling.top_p < 1.0:
        text_rows = (kinds >= 2).unsqueeze(-1)
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs > sampling.top_p  # keeps the first token always
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop & text_rows, float("-inf"))
    if sampling.image_top_k > 0:
        image_rows = (kinds == IMAGE).unsqueeze(-1)
        kth = out.topk(sampling.image_top_k, dim=-1).values[:, -1:]
        out = out.masked_fill((out < kth) & image_rows, float("-inf"))
    return out


@dataclass(frozen=True)
class RawRollout:
    """The engine's output before image decoding: ids, log-probs, kinds, code probabilities."""

    completion_ids: torch.Tensor  # (N, L), padded
    completion_mask: torch.Tensor  # (N, L) bool
    logprobs: torch.Tensor  # (N, L)
    kinds: torch.Tensor  # (N, L) slot kind per position
    finished: torch.Tensor  # (N,) bool: reached eos (not cut by max_new_tokens)
    truncated: torch.Tensor  # (N,) bool: a length guard ended the sample or closed a block
    image_probs: torch.Tensor | None  # (N, n_image_slots, K): code distributions, when kept


@torch.no_grad()
def generate(
    model: StepModel, prompts: PromptBatch, sampling: Sampling, seed: int = 0, keep_image_probs: bool = False
) -> RawRollout:
    """Sample one completion per prompt row (repeat the batch for groups)."""
    layout = model.layout
    kinds_of = layout.program.kinds
    n = len(prompts)
    gen = torch.Generator().manual_seed(seed)
    use_cfg = sampling.cfg is not None
    # with CFG the LR-blanked prompts ride along as rows n..2n-1 of the same forward passes
    history = torch.cat([prompts.input_ids, prompts.uncond_ids]) if use_cfg else prompts.input_ids
    lr = prompts.lr
    steps = min(sampling.max_new_tokens, layout.max_completion_length(sampling.max_text_tokens))
    logits, cache = model.prefill(history, lr, history.shape[1] + steps if sampling.use_cache else None)
    ptr = torch.zeros(n, dtype=torch.long)
    text_len = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    capped_any = torch.zeros(n, dtype=torch.bool)
    zeros = torch.zeros(n)
    out_ids, out_lp, out_kind, out_valid, probs_kept = [], [], [], [], []
    for _ in range(steps):
        kinds, forced_token = layout.slots(ptr, text_len, sampling.max_text_tokens)
        forced = kinds == FORCED
        capped_any |= forced & (kinds_of[ptr] >= 2) & ~done
        if bool(forced.all()):  # tags, image structure, eos: nothing to sample this step
            token, lp = forced_token, zeros
        else:
            image_rows = kinds == IMAGE
            if use_cfg:
                logits = guide(logits[:n], logits[n:], image_rows, sampling.cfg)
            scaled = constrained_logits(logits, kinds, layout, sampling).float()
            logp = torch.log_softmax(scaled, dim=-1)
            probs = _filter(scaled, kinds, sampling).softmax(-1)
            token = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
            token = torch.where(forced, forced_token, token)
            lp = torch.where(forced, zeros, logp.gather(-1, token.unsqueeze(-1)).squeeze(-1))
            if keep_image_probs:
                probs_kept.append((image_rows & ~done, logp[:, layout.code_offset :].exp()))
        token = torch.where(done, layout.pad, token)
        out_ids.append(token)
        out_lp.append(torch.where(done, zeros, lp))
        out_kind.append(torch.where(done, FORCED, kinds))
        out_valid.append(~done)
        new_ptr, new_len = layout.advance(ptr, text_len, token)
        ptr, text_len = torch.where(done, ptr, new_ptr), torch.where(done, text_len, new_len)
        done = done | (ptr == layout.program.length)
        if bool(done.all()):
            break
        fed = torch.cat([token, token]) if use_cfg else token
        if not sampling.use_cache:
            history = torch.cat([history, fed[:, None]], dim=1)
        logits, cache = model.step(fed, cache, history, lr)
    image_probs = None
    if keep_image_probs:
        per_row: list[list[torch.Tensor]] = [[] for _ in range(n)]
        for rows, p in probs_kept:
            for r in rows.nonzero().flatten().tolist():
                per_row[r].append(p[r])
        slots = int((kinds_of == IMAGE).sum())
        k = layout.codebook_size
        image_probs = torch.stack(
            [torch.stack(r + [torch.zeros(k)] * (slots - len(r))) if r else torch.zeros(slots, k) for r in per_row]
        )
    return RawRollout(
        completion_ids=torch.stack(out_ids, 1),
        completion_mask=torch.stack(out_valid, 1),
        logprobs=torch.stack(out_lp, 1),
        kinds=torch.stack(out_kind, 1),
        finished=done,
        truncated=~done | capped_any,
        image_probs=image_probs,
    )
