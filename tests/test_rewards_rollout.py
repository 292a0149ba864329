"""Rewards on a real rollout: a sample whose text block the length guard closed scores format 0."""

from __future__ import annotations

import math

import pytest
import torch

from realsr_r1.config import GenerationParams, RewardParams
from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.rewards import Truth, score_batch, score_rollout
from realsr_r1.rewards.scoring import TRUNCATED
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.vlcot import TEXT_BLOCKS
from tests.helpers import tiny_chain, tiny_policy_config

# every text block may hold at most 3 tokens; the policy below closes a block itself about half
# of the time at each step, so in one group some rows finish on their own and some are cut
SAMPLING = Sampling(temperature=1.0, top_p=1.0, image_temperature=1.0, max_text_tokens=3, max_new_tokens=1000)


@pytest.fixture(scope="module")
def rollout_and_truths():
    chain, image_tok, text_tok = tiny_chain(n=12, codebook=64)
    policy = TinyPolicy.build(tiny_policy_config(), text_tok, image_tok)
    # an untrained model almost never draws a closing tag itself (every row would be truncated):
    # raise the closing tags' logits so that each is drawn with probability ~1/2 per step
    bias = torch.zeros(policy.layout.vocab_size)
    bias[[policy.layout.close[b] for b in TEXT_BLOCKS]] = math.log(len(text_tok))
    policy.backbone.lm_head.register_forward_hook(lambda _module, _args, logits: logits + bias)
    gts = list(to_uint8(chain.images["final"][:2]))
    out = policy.rollout(
        policy.prompts(list(to_uint8(chain.lr[:2]))), group_size=4, sampling=SAMPLING, seed=0
    )
    truths = [Truth.from_text("medium blur, downsample", ["cat"], gts[g]) for g in out.group.tolist()]
    return out, truths


def test_a_row_closed_by_the_length_guard_scores_format_0(rollout_and_truths) -> None:
    out, truths = rollout_and_truths
    truncated = out.truncated.tolist()
    parsed = [chain is not None for chain in out.chains]
    # the precondition: the guard closed a block in some rows that still parse, others finished freely
    assert any(t and p for t, p in zip(truncated, parsed, strict=True)), (truncated, parsed)
    assert any(not t and p for t, p in zip(truncated, parsed, strict=True)), (truncated, parsed)
    params = RewardParams(generation=GenerationParams(fidelity_weight=1.0))  # NIQE is not the point here
    batch = score_rollout(out, truths, params)
    for i, (cut, ok) in enumerate(zip(truncated, parsed, strict=True)):
        expected = 1.0 if ok and not cut else 0.0
        assert batch.rewards["format"][i] == expected, (i, cut, ok)
        if cut and ok:
            assert batch.errors[i] == TRUNCATED
    # the flag is all that differs: without it, the same completions would all score format 1
    blind = score_batch(out.completions, truths, params)
    assert blind.rewards["format"][[p for p in range(len(out)) if parsed[p]]].tolist() == [1.0] * sum(parsed)
    # the other rewards still score what the truncated rows wrote
    assert batch.rewards["generation"].tolist() == blind.rewards["generation"].tolist()


def test_truncation_flags_must_match_the_batch(rollout_and_truths) -> None:
    out, truths = rollout_and_truths
    with pytest.raises(ValueError, match="truncation flags"):
        score_batch(out.completions, truths, RewardParams(), truncated=[True])
