"""The rollout engine: G samples per prompt, batched, KV-cached, decoded under the layout.

Every row walks the layout's completion program (`Layout.program`) with a pointer: forced
slots emit their token, text slots sample text (temperature + top-p) until their closing tag,
image slots sample image codes only (temperature, optional top-k, optional classifier-free
guidance against the LR-blanked prompt). Two length guards: a text block reaching
`max_text_tokens` is closed by force, and `max_new_tokens` stops a sample; both mark it
truncated (the format reward gives it 0). All rows step together, one token per forward, so
the state is a few tensors and a step costs no Python per row; a finished row leaves the
batch and the KV cache, so ragged group lengths cost no wasted forwards. The log-prob kept for each
token is that of the constrained, temperature-scaled distribution (before top-p / top-k),
which `teacher_forced_logprobs` recomputes identically from a teacher-forced pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch

from realsr_r1.policy.interface import PromptBatch, Sampling
from realsr_r1.policy.layout import FORCED, IMAGE, Layout


class StepModel(Protocol):
    """What the engine needs of a backbone: prefill a prompt batch, then one token at a time."""

    layout: Layout
    device: torch.device

    def prefill(
        self,
        input_ids: torch.Tensor,
        lr: torch.Tensor | None,
        cache_len: int | None,
        attention_mask: torch.Tensor | None = None,
        group_size: int = 1,
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the next token (B, V) and a cache for `cache_len` positions (None: no cache);
        `attention_mask` (B, P) bool marks left padding (None: none); rows come in runs of
        `group_size` copies of one prompt, which may be computed once."""

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
        """Feed one token per row; `history` is the whole sequence so far (for the no-cache path).

        `need_logits=False`: the next token of every row is forced; logits may be skipped (None).
        `next_code` (rows, T), aligned with the end of `history`: per position, the index in
        program order of the image code it predicts, -1 where it predicts none.
        `attention_mask` (rows, T) bool, aligned with `history`: False on the prompt's left
        padding (None: no padding)."""

    def select(self, cache: Any, rows: torch.Tensor) -> Any:
        """Keep only `rows` of the cache's batch (finished samples leave the batch)."""


def guide(cond: torch.Tensor, uncond: torch.Tensor | None, image_rows: torch.Tensor, cfg: float | None) -> torch.Tensor:
    """Classifier-free guidance on image positions: uncond + cfg * (cond - uncond)."""
    if cfg is None or uncond is None:
        return cond
    guided = uncond + cfg * (cond - uncond)
    return torch.where(image_rows.unsqueeze(-1), guided, cond)


def constrained_logits(logits: torch.Tensor, kinds: torch.Tensor, layout: Layout, sampling: Sampling) -> torch.Tensor:
    """Float32 logits divided by each position's temperature and masked to its slot's allowed ids.

    One new (rows, V) tensor: the mask is applied in place on the division's result."""
    temp = torch.where(kinds == IMAGE, sampling.image_temperature, sampling.temperature).unsqueeze(-1)
    return (logits.float() / temp).masked_fill_(layout.blocked[kinds], float("-inf"))


def picked_logprobs(scaled: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `tokens` under `scaled` (0 at forced positions) and the normaliser logsumexp.

    Only the chosen logit is gathered: no log-softmax over the whole vocabulary is kept."""
    lse = torch.logsumexp(scaled, dim=-1)
    picked = scaled.gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1) - lse
    return torch.where(kinds == FORCED, torch.zeros_like(picked), picked), lse


def teacher_forced_logprobs(
    cond: torch.Tensor, uncond: torch.Tensor | None, tokens: torch.Tensor, kinds: torch.Tensor, layout: Layout, sampling: Sampling
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, V) logits of scored positions -> (log-prob of `tokens`, log Z of the raw logits).

    Rows go through in blocks of an eighth, so the temporaries (guided and scaled copies, the
    logsumexp's own) stay a fraction of the logits the caller holds. The blocks are `split`
    views: their gradients join by one concatenation, where slices would each fill a zero
    gradient of the whole logits."""
    block = max(1, -(-len(cond) // 8))
    cond_blocks = cond.split(block)
    uncond_blocks = [None] * len(cond_blocks) if uncond is None else uncond.split(block)
    out_lp, out_z = [], []
    for c, u, t, k in zip(cond_blocks, uncond_blocks, tokens.split(block), kinds.split(block), strict=True):
        logits = guide(c, u, k == IMAGE, sampling.cfg)
        out_z.append(torch.logsumexp(logits.float(), dim=-1))
        out_lp.append(picked_logprobs(constrained_logits(logits, k, layout, sampling), t, k)[0])
    return torch.cat(out_lp), torch.cat(out_z)


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


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of (rows, V) probabilities (unnormalised, zeros allowed), by the inverse
    CDF: one uniform number per row, where `torch.multinomial` draws one per vocabulary entry on
    the CPU. A zero-probability index is never drawn."""
    cdf = probs.cumsum(-1)
    u = torch.rand(len(probs), 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True)
    # u can round up to the total: stay on the first index where the cdf reaches it (it has mass)
    last = torch.searchsorted(cdf, cdf[:, -1:].contiguous())
    return torch.minimum(index, last).squeeze(-1)


def generate(
    model: StepModel, prompts: PromptBatch, sampling: Sampling, seed: int = 0, keep_image_probs: bool = False
) -> RawRollout:
    """Sample one completion per prompt row (repeat the batch for groups).

    Runs under `torch.inference_mode`, which skips the version counters and view tracking that
    `no_grad` keeps; the outputs are cloned outside it, so training code can use them like any tensor."""
    with torch.inference_mode():
        raw = _generate(model, prompts, sampling, seed, keep_image_probs)
    values = {f.name: getattr(raw, f.name) for f in fields(raw)}
    return RawRollout(**{name: None if t is None else t.clone() for name, t in values.items()})


def _generate(model: StepModel, prompts: PromptBatch, sampling: Sampling, seed: int, keep_image_probs: bool) -> RawRollout:
    """`generate`'s loop. Every tensor made here lives on the model's device (the generator
    too); the only host syncs are a few booleans per step that decide whether to sample and
    when rows leave."""
    device = model.device
    layout = model.layout.to(device)
    kinds_of = layout.program.kinds
    prompts = prompts.to(device)
    n = len(prompts)
    gen = torch.Generator(device=device).manual_seed(seed)
    use_cfg = sampling.cfg is not None
    # with CFG the LR-blanked prompts ride along as rows n..2n-1 of the same forward passes
    history = torch.cat([prompts.input_ids, prompts.uncond_ids]) if use_cfg else prompts.input_ids
    attn = prompts.attention_mask  # grows by one True column per fed token; None: no padding anywhere
    attn = torch.cat([attn, attn]) if use_cfg and attn is not None else attn
    lr = prompts.lr
    longest = layout.max_completion_length(sampling.max_text_tokens)
    steps = sampling.max_new_tokens if longest is None else min(sampling.max_new_tokens, longest)
    # conditional rows, then LR-blanked ones: both in runs of `group_size` copies of one prompt
    logits, cache = model.prefill(history, lr, history.shape[1] + steps if sampling.use_cache else None, attn, prompts.group_size)
    next_code = torch.full_like(history, -1)  # per fed position: the image code it predicts (-1: none)
    ptr = torch.zeros(n, dtype=torch.long, device=device)
    text_len = torch.zeros_like(ptr)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    capped_any = torch.zeros_like(done)
    zeros = torch.zeros(n, device=device)
    # rows still in the batch (None: all of them, so no step pays for indexing); finished rows
    # leave it and the cache
    active: torch.Tensor | None = None

    def live(t: torch.Tensor) -> torch.Tensor:
        return t if active is None else t[active]

    image_probs, image_slot = None, torch.zeros_like(ptr)
    if keep_image_probs:  # filled in place: row r's j-th image code distribution at [r, j]
        image_probs = torch.zeros(n, int((kinds_of == IMAGE).sum()), layout.codebook_size, device=device)
    out_ids, out_lp, out_kind, out_valid = [], [], [], []
    kinds, forced_token = layout.slots(ptr, text_len, sampling.max_text_tokens)
    for _ in range(steps):
        forced = kinds == FORCED
        if sampling.max_text_tokens is not None:  # a text slot forced by its cap
            capped_any |= forced & (kinds_of[ptr] >= 2) & ~done
        token, lp = forced_token, zeros  # finished rows keep these (the token becomes pad below)
        if not bool(forced.all()):  # else tags, image structure, eos: nothing to sample this step
            a_kinds, a_forced = live(kinds), live(forced)
            image_rows = a_kinds == IMAGE
            if use_cfg:
                logits = guide(logits[: len(a_kinds)], logits[len(a_kinds) :], image_rows, sampling.cfg)
            scaled = constrained_logits(logits, a_kinds, layout, sampling)
            probs = _filter(scaled, a_kinds, sampling).softmax(-1)
            a_token = torch.where(a_forced, live(forced_token), draw(probs, gen))
            a_lp, lse = picked_logprobs(scaled, a_token, a_kinds)
            if active is None:
                token, lp = a_token, a_lp
            else:
                token, lp = forced_token.clone(), zeros.clone()
                token[active], lp[active] = a_token, a_lp
            if image_probs is not None:
                rows = image_rows.nonzero().flatten() if active is None else active[image_rows]
                code_logits = scaled[image_rows, layout.code_offset :] - lse[image_rows].unsqueeze(-1)
                image_probs[rows, image_slot[rows]] = code_logits.exp()
        token = torch.where(done, layout.pad, token)
        image_slot += (kinds == IMAGE) & ~done
        out_ids.append(token)
        out_lp.append(lp)
        out_kind.append(torch.where(done, FORCED, kinds))
        out_valid.append(~done)
        # a finished row stays on the program's sentinel slot (its pad advances nowhere)
        ptr, text_len = layout.advance(ptr, text_len, token)
        done = ptr == layout.program.length
        if bool(done.all()):
            break
        still = ~live(done)
        if not bool(still.all()):  # drop finished rows from the batch and the cache
            keep = still.nonzero().flatten()
            both = torch.cat([keep, keep + len(still)]) if use_cfg else keep
            cache = model.select(cache, both) if cache is not None else None
            history, next_code = history[both], next_code[both]
            attn = None if attn is None else attn[both]
            active = keep if active is None else active[keep]
        fed = live(token)
        fed = torch.cat([fed, fed]) if use_cfg else fed
        kinds, forced_token = layout.slots(ptr, text_len, sampling.max_text_tokens)  # the next step's slots
        next_kinds = live(kinds)
        code = torch.where(next_kinds == IMAGE, live(image_slot), -1)
        code = torch.cat([code, code]) if use_cfg else code
        if sampling.use_cache:
            next_code = code[:, None]
        else:
            history = torch.cat([history, fed[:, None]], dim=1)
            next_code = torch.cat([next_code, code[:, None]], dim=1)
        if attn is not None:
            attn = torch.cat([attn, attn.new_ones(len(attn), 1)], dim=1)
        need_logits = not bool((next_kinds == FORCED).all())
        logits, cache = model.step(fed, cache, history, live(lr), need_logits, next_code, attn)
    return RawRollout(
        completion_ids=torch.stack(out_ids, 1),
        completion_mask=torch.stack(out_valid, 1),
        logprobs=torch.stack(out_lp, 1),
        kinds=torch.stack(out_kind, 1),
        finished=done,
        truncated=~done | capped_any,
        image_probs=image_probs,
    )
