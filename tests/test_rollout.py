"""The rollout engine: well-formed groups from an untrained model, log-probs that match a
teacher-forced pass, sampled (not greedy) text, the length guards, CFG and expected decoding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.vlcot import IMAGE_BLOCKS, VLCoTFormatError, parse
from tests.chain_data import tiny_policy_config

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
