"""The rollout engine: well-formed groups from an untrained model, log-probs that match a
teacher-forced pass, sampled (not greedy) text, the length guards, CFG and expected decoding,
the model's device for every tensor made, and chunked scoring against the full computation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from realsr_r1.policy import decoder
from realsr_r1.policy.interface import Sampling, SequenceBatch
from realsr_r1.policy.layout import FORCED, IMAGE
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.vlcot import IMAGE_BLOCKS, VLCoTFormatError, parse
from tests.helpers import ragged, tiny_policy_config

SAMPLING = Sampling(temperature=0.9, top_p=0.9, image_temperature=0.8, max_text_tokens=12, max_new_tokens=400)


@pytest.fixture(scope="module")
def setup(tiny_parts):
    chain, image_tok, text_tok = tiny_parts
    policy = TinyPolicy.build(tiny_policy_config(), text_tok, image_tok)
    return policy, policy.prompts(list(to_uint8(chain.lr[:3])))


def test_untrained_rollout_is_well_formed_with_exact_code_counts(setup) -> None:
    policy, prompts = setup
    out = policy.rollout(prompts, group_size=4, sampling=SAMPLING, seed=1)
    assert len(out) == 12 and out.group.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    grids = policy.layout.image_grids
    for i, completion in enumerate(out.completions):
        chain = parse(completion)  # raises on any format break
        assert out.chains[i] is not None
        for block, side in zip(IMAGE_BLOCKS, (16, 32, 64), strict=True):
            img = getattr(chain, block)
            assert img.shape == (side, side, 3) and img.dtype.name == "uint8"
        ids = out.batch.completion_ids[i][out.batch.completion_mask[i]]
        codes = ids[ids >= policy.layout.code_offset]
        assert len(codes) == sum(h * w for h, w in grids.values()) == int(out.image_mask[i].sum())
        assert ids[-1] == policy.layout.eos
    # the untrained model never closes a 12-token text block itself: forced closes mark truncation
    assert out.truncated.all()


def test_left_padded_prompts_score_as_each_prompt_alone(setup) -> None:
    """Prompts of different lengths (a chat template's) go left-padded with a mask: positions
    count real tokens only, so every completion scores as under its own unpadded prompt, and
    the rollout's log-probs equal the teacher-forced ones of the padded batch."""
    policy, prompts = setup
    padded, alone = ragged(prompts, [3, 0, 5], policy.layout.pad)
    assert not padded.attention_mask.all()
    for sampling in (SAMPLING, replace(SAMPLING, cfg=0.8)):
        out = policy.rollout(padded, group_size=2, sampling=sampling, seed=4)
        mask = out.batch.completion_mask
        with torch.no_grad():
            scores = policy.score(out.batch, sampling)
            assert (scores.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
            for i, row in enumerate(alone):
                part = slice(2 * i, 2 * i + 2)
                single = SequenceBatch(row.repeat(2), out.batch.completion_ids[part], mask[part], out.batch.kinds[part])
                lp = policy.score(single, sampling).logprobs
                assert (lp[mask[part]] - out.logprobs[part][mask[part]]).abs().max() < 1e-4


def test_rollout_logprobs_equal_teacher_forced_logprobs(setup) -> None:
    policy, prompts = setup
    for sampling in (SAMPLING, replace(SAMPLING, cfg=0.8, image_top_k=10, temperature=1.3)):
        out = policy.rollout(prompts, group_size=2, sampling=sampling, seed=2)
        with torch.no_grad():
            scores = policy.score(out.batch, sampling)
        mask = out.batch.completion_mask
        assert torch.equal(scores.text_mask, out.text_mask) and torch.equal(scores.image_mask, out.image_mask)
        assert (scores.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
        assert out.logprobs[out.sampled_mask].lt(0).all()


def test_text_is_sampled_so_a_group_differs(setup) -> None:
    policy, prompts = setup
    out = policy.rollout(prompts, group_size=4, sampling=SAMPLING, seed=3)
    first_group = [c.degradation for c in out.chains[:4]]
    assert len(set(first_group)) > 1
    again = policy.rollout(prompts, group_size=4, sampling=SAMPLING, seed=3)
    assert torch.equal(again.batch.completion_ids, out.batch.completion_ids)  # seeded


def test_kv_cache_and_full_recompute_agree(setup) -> None:
    policy, prompts = setup
    cached = policy.rollout(prompts, 1, SAMPLING, seed=4)
    plain = policy.rollout(prompts, 1, replace(SAMPLING, use_cache=False), seed=4)
    assert torch.equal(cached.batch.completion_ids, plain.batch.completion_ids)
    assert (cached.logprobs - plain.logprobs).abs().max() < 1e-4


def test_max_new_tokens_guard_ends_a_runaway_sample(setup) -> None:
    policy, prompts = setup
    out = policy.rollout(prompts, 2, replace(SAMPLING, max_new_tokens=40), seed=5)
    assert out.truncated.all() and out.batch.completion_ids.shape[1] == 40
    assert all(chain is None for chain in out.chains)
    for completion in out.completions:
        with pytest.raises(VLCoTFormatError):
            parse(completion)


def test_expected_residual_decoding(setup) -> None:
    policy, prompts = setup
    expected_tok = type(policy.image_tokenizer)(replace(policy.image_tokenizer.config, decode="expected"), policy.image_tokenizer.codebook)
    policy_e = TinyPolicy(policy.config, policy.backbone, policy.text_tokenizer, expected_tok)
    policy_e.projector = policy.projector
    sampled = policy.rollout(prompts, 1, SAMPLING, seed=6)
    expected = policy_e.rollout(prompts, 1, SAMPLING, seed=6)
    assert torch.equal(sampled.batch.completion_ids, expected.batch.completion_ids)
    a, b = sampled.chains[0].final_image.astype(float), expected.chains[0].final_image.astype(float)
    assert a.shape == b.shape == (64, 64, 3) and abs(a - b).mean() > 0
    # the expectation averages the codes: smoother than any one sample
    assert b.std() <= a.std() + 1e-6
    # one rollout gives both: the drawn codes' images and the expected final image
    both = policy.rollout(prompts, 1, SAMPLING, seed=6, expected_final=True)
    assert sampled.expected_final is None
    assert (both.chains[0].final_image == sampled.chains[0].final_image).all()
    assert (both.expected_final[0] == expected.chains[0].final_image).all()


def test_ragged_groups_leave_the_batch_consistently(setup) -> None:
    """Hot, untruncated text makes rows finish at different steps: the rows that leave the
    batch (and the KV cache) must not disturb the rows that stay."""
    policy, prompts = setup
    hot = Sampling(temperature=40.0, top_p=1.0, image_temperature=1.0, max_text_tokens=80, max_new_tokens=1000)
    out = policy.rollout(prompts, 2, hot, seed=7)
    lengths = out.batch.completion_mask.sum(1)
    assert len(set(lengths.tolist())) > 2  # the precondition: ragged lengths
    assert all(chain is not None for chain in out.chains)
    with torch.no_grad():
        scores = policy.score(out.batch, hot)
    mask = out.batch.completion_mask
    assert (scores.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
    plain = policy.rollout(prompts, 2, replace(hot, use_cache=False), seed=7)
    assert torch.equal(plain.batch.completion_ids, out.batch.completion_ids)
    guided = replace(hot, cfg=0.8)
    out_cfg = policy.rollout(prompts, 2, guided, seed=8)
    with torch.no_grad():
        scores_cfg = policy.score(out_cfg.batch, guided)
    mask = out_cfg.batch.completion_mask
    assert (scores_cfg.logprobs[mask] - out_cfg.logprobs[mask]).abs().max() < 1e-4


class DeviceLog(TorchDispatchMode):
    """Every device a tensor (or a generator) touched by an operator lives on."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_leaves((args, kwargs or {}, out)):
            if isinstance(x, torch.Tensor | torch.Generator):
                self.devices.setdefault(str(x.device), set()).add(str(func))
        return out


def test_rollout_and_score_create_nothing_off_the_model_device(setup) -> None:
    """The default device is `meta` while the model sits on the CPU: a tensor (pointer, mask,
    generator, cache counter) made without naming the model's device would land on meta, and
    shows up here or breaks the step. What holds on the CPU this way holds on CUDA."""
    policy, prompts = setup
    guided = replace(SAMPLING, cfg=0.8, image_top_k=10, max_text_tokens=6)
    log = DeviceLog()
    with torch.device("meta"), log:
        out = policy.rollout(prompts, 2, guided, seed=11)
        scores = policy.score(out.batch, guided)
        scores.logprobs.sum().backward()  # the checkpointed chunks are recomputed here
    policy.zero_grad(set_to_none=True)
    assert set(log.devices) == {str(policy.device)}, {d: sorted(f)[:5] for d, f in log.devices.items()}
    assert "aten.rand.generator" in log.devices[str(policy.device)]  # the generator (`draw`) was checked too


def test_rollout_keeps_the_slot_kinds_that_a_replay_would_find(setup) -> None:
    policy, prompts = setup
    out = policy.rollout(prompts, 2, SAMPLING, seed=12)
    batch, mask = out.batch, out.batch.completion_mask
    replayed = policy.layout.replay(batch.completion_ids, mask, SAMPLING.max_text_tokens)
    assert torch.equal(replayed[mask], batch.kinds[mask])
    with torch.no_grad():
        kept = policy.score(batch, SAMPLING).logprobs
        again = policy.score(replace(batch, kinds=None), SAMPLING).logprobs
    assert torch.equal(kept, again)


@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_score_equals_a_full_log_softmax_with_its_gradient(setup, monkeypatch: pytest.MonkeyPatch, recompute: bool) -> None:
    """Chunks of 7 positions (boundaries inside text and image blocks) against the plain
    computation over the whole (B, L, V) logits, CFG on, values and parameter gradients; with
    the chunks recomputed in the backward pass (activation checkpointing) and without."""
    policy, prompts = setup
    s = replace(SAMPLING, cfg=0.8, temperature=1.3)
    out = policy.rollout(prompts, 2, s, seed=13)
    batch, mask, kinds = out.batch, out.batch.completion_mask, out.batch.kinds
    comp, p, n = batch.completion_ids, batch.prompt.input_ids.shape[1], len(out)

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([torch.cat([batch.prompt.input_ids, comp], 1), torch.cat([batch.prompt.uncond_ids, comp], 1)])
        logits = policy.logits(both, batch.prompt.lr)[:, p - 1 : -1]
        cond, uncond = logits[:n], logits[n:]
        image = (kinds == IMAGE).unsqueeze(-1)
        guided = torch.where(image, uncond + 0.8 * (cond - uncond), cond)
        temp = torch.where(image, s.image_temperature, s.temperature)
        logp = torch.log_softmax((guided / temp).masked_fill(~policy.layout.allowed[kinds], float("-inf")), -1)
        lp = logp.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
        return torch.where((kinds == FORCED) | ~mask, 0.0, lp), torch.logsumexp(guided, -1)

    def loss_and_grads(lp: torch.Tensor, log_z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss = lp[mask].sum() + 1e-2 * log_z[mask].pow(2).sum()
        grads = torch.autograd.grad(loss, [q for q in policy.parameters()], allow_unused=True)
        return loss, [torch.zeros(1) if g is None else g for g in grads]

    monkeypatch.setattr(policy, "score_chunk", 7)
    monkeypatch.setattr(policy, "checkpoint_logits_above", 0 if recompute else 2**40)
    checkpoints: list[int] = []
    monkeypatch.setattr(decoder, "checkpoint", lambda *a, **kw: checkpoints.append(1) or torch.utils.checkpoint.checkpoint(*a, **kw))
    scores = policy.score(batch, s)
    assert bool(checkpoints) == recompute
    ref_lp, ref_z = reference()
    assert (scores.logprobs - ref_lp).abs().max() < 1e-4 and (scores.log_z - ref_z).abs().max() < 1e-4
    loss, grads = loss_and_grads(scores.logprobs, scores.log_z)
    ref_loss, ref_grads = loss_and_grads(ref_lp, ref_z)
    assert abs((loss - ref_loss).item()) < 1e-3 * abs(ref_loss.item())
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-5)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_a_groups_prompt_runs_once_and_scores_as_if_every_row_ran_it(setup) -> None:
    """Rows in runs of one prompt (`PromptBatch.repeat`) run the prompt once, in `score` and in
    the rollout's prefill, and share its KV cache: against every row running it (group_size 1),
    the same log-probs and gradients, the same prefill logits and cache; left padding and CFG on."""
    policy, prompts = setup
    padded, _ = ragged(prompts, [3, 0, 5], policy.layout.pad)
    widths: list[int] = []
    hook = policy.decoder.register_forward_pre_hook(lambda m, a, kw: widths.append(len(kw["inputs_embeds"])), with_kwargs=True)
    try:
        for sampling in (SAMPLING, replace(SAMPLING, cfg=0.8)):
            rows = 2 if sampling.cfg else 1  # conditional (and LR-blanked) rows
            out = policy.rollout(padded, group_size=3, sampling=sampling, seed=5)
            assert out.batch.prompt.group_size == 3
            every = replace(out.batch, prompt=replace(out.batch.prompt, group_size=1))
            widths.clear()
            shared = policy.score(out.batch, sampling)
            assert widths == [3 * rows, 9 * rows]  # the prompts once, then the completions over their cache
            widths.clear()
            alone = policy.score(every, sampling)
            assert widths == [9 * rows]
            assert (shared.logprobs - alone.logprobs).abs().max() < 1e-5
            grads = [torch.autograd.grad(s.logprobs.sum(), list(policy.parameters()), allow_unused=True) for s in (shared, alone)]
            for g, r in zip(*grads, strict=True):
                assert (g is None) == (r is None) and (g is None or torch.allclose(g, r, rtol=1e-4, atol=1e-6))
    finally:
        hook.remove()
    rows = padded.repeat(3)
    with torch.no_grad():
        (a, cache_a), (b, cache_b) = (policy.prefill(rows.input_ids, rows.lr, rows.input_ids.shape[1] + 8, rows.attention_mask, g) for g in (3, 1))
    assert (a - b).abs().max() < 1e-5
    for x, y in zip(cache_a.layers, cache_b.layers, strict=True):
        assert x.keys.shape == y.keys.shape and (x.keys - y.keys).abs().max() < 1e-5


@pytest.fixture(scope="module")
def context_setup(tiny_parts):
    chain, image_tok, text_tok = tiny_parts
    policy = TinyPolicy.build(tiny_policy_config(code_context="lr"), text_tok, image_tok)
    return policy, policy.prompts(list(to_uint8(chain.lr[:3])))


def test_code_context_is_the_same_in_rollout_score_and_cache_free_decoding(context_setup, tmp_path) -> None:
    """Each code's LR context enters the input that predicts it: the rollout (with or without
    its KV cache, with CFG's blanked rows) and a teacher-forced pass must agree on every log-prob."""
    policy, prompts = context_setup
    for sampling in (SAMPLING, replace(SAMPLING, cfg=0.8, image_top_k=10)):
        out = policy.rollout(prompts, group_size=2, sampling=sampling, seed=2)
        plain = policy.rollout(prompts, group_size=2, sampling=replace(sampling, use_cache=False), seed=2)
        assert torch.equal(out.batch.completion_ids, plain.batch.completion_ids)
        with torch.no_grad():
            scores = policy.score(out.batch, sampling)
        mask = out.batch.completion_mask
        assert (scores.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
        assert (plain.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
    policy.save_pretrained(tmp_path / "p")
    back = TinyPolicy.from_pretrained(tmp_path / "p")
    with torch.no_grad():
        assert torch.equal(back.score(out.batch, sampling).logprobs, scores.logprobs)


def test_code_context_reads_the_lr_around_each_code_only(context_setup) -> None:
    """Brightening the LR's top-left corner changes the context of the final image's codes
    there and leaves the far corner's codes alone; the place embedding tells blocks apart."""
    policy, prompts = context_setup
    context = policy.code_context
    lr = prompts.lr[:1].clone()
    bright = lr.clone()
    bright[..., :4, :4] = 1.0
    final = 4 + 16  # program order: rough 2x2, middle 4x4, then the final 8x8
    near, far = final + 0, final + 63
    codes = torch.tensor([near, far])
    rows = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        a, b = context(lr, rows, codes), context(bright, rows, codes)
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])
    assert context.features(lr).shape == (1, 4 + 16 + 64, 3 * context.window**2)


def test_draw_samples_the_distribution_and_never_a_zero() -> None:
    """The inverse-CDF sampler: frequencies match the probabilities (unnormalised rows, zeros
    inside and at the end), and a zero-probability index is never drawn."""
    from realsr_r1.policy.rollout import draw

    probs = torch.tensor([[0.2, 0.0, 1.2, 0.6, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([draw(probs, gen) for _ in range(20_000)])
    freq = torch.stack([torch.bincount(picks[:, r], minlength=5) for r in range(2)]).double() / len(picks)
    assert (freq[0] - torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.double)).abs().max() < 0.015
    assert freq[1].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    # the largest uniform still lands on the last index with mass
    ones = torch.Generator()
    ones.manual_seed(1)
    assert draw(torch.tensor([[0.5, 0.5, 0.0]]), ones).item() in (0, 1)
