"""The rollout's lean Llama step against `LlamaModel.forward`, its reference: the same hidden
states and the same cache, bit for bit, with and without left padding, with grouped KV heads;
and a whole rollout through it equals one through `transformers`' forward."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaModel
from transformers.cache_utils import Cache

from realsr_r1.policy import llama_step
from realsr_r1.policy.decoder import PrefixLayer
from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import to_uint8
from tests.helpers import tiny_policy_config


def llama(kv_heads: int) -> LlamaModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=128, attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaModel(config).eval()


def cache(model: LlamaModel) -> Cache:
    return Cache(layers=[PrefixLayer(64) for _ in range(model.config.num_hidden_layers)])


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_step_equals_the_llama_forward_bit_for_bit(kv_heads: int, padded: bool) -> None:
    model = llama(kv_heads)
    b, p = 3, 7
    prompt = torch.randn(b, p, 64)
    mask = torch.ones(b, p, dtype=torch.bool)
    if padded:
        mask[0, :3] = False
        mask[2, :1] = False
    ours, theirs = cache(model), cache(model)
    with torch.no_grad():
        for c in (ours, theirs):
            model(inputs_embeds=prompt, attention_mask=mask if padded else None, cache=c, use_cache=True)
        for _ in range(5):  # several steps: each reads what the last one wrote
            x = torch.randn(b, 1, 64)
            mask = torch.cat([mask, mask.new_ones(b, 1)], 1)
            positions = (mask.long().cumsum(1) - 1)[:, -1:]
            expected = model(
                inputs_embeds=x, attention_mask=mask if padded else None, position_ids=positions if padded else None,
                cache=theirs, use_cache=True,
            ).last_hidden_state  # fmt: skip
            position = positions[:, 0] if padded else torch.full((b,), ours.get_seq_length())
            got = llama_step.step(model, x, position, ours, mask if padded else None)
            assert torch.equal(got, expected)
    for mine, ref in zip(ours.layers, theirs.layers, strict=True):
        assert torch.equal(mine.keys, ref.keys) and torch.equal(mine.values, ref.values)


def test_step_in_bf16_stays_within_bf16_rounding_of_the_llama_forward() -> None:
    """bf16 weights (a GPU rollout): `F.rms_norm` need not round as the module does, so within
    one bf16 rounding step rather than bit for bit."""
    model = llama(4).to(torch.bfloat16)
    ours, theirs = cache(model), cache(model)
    prompt, x = torch.randn(2, 5, 64, dtype=torch.bfloat16), torch.randn(2, 1, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        for c in (ours, theirs):
            model(inputs_embeds=prompt, cache=c, use_cache=True)
        expected = model(inputs_embeds=x, cache=theirs, use_cache=True).last_hidden_state.float()
        got = llama_step.step(model, x, torch.full((2,), 5), ours, None).float()
    assert torch.allclose(got, expected, rtol=2**-7, atol=2**-7)


def test_supports_stock_llama_only() -> None:
    model = llama(4)
    assert llama_step.supports(model)

    class Custom(LlamaModel):
        pass

    assert not llama_step.supports(Custom(model.config))
    eager = LlamaModel(LlamaConfig(**{**model.config.to_dict(), "attn_implementation": "eager"}))
    assert not llama_step.supports(eager)  # only SDPA: the model's own forward runs for any other attention


def test_rollout_through_the_step_equals_one_through_the_llama_forward(tiny_parts, monkeypatch: pytest.MonkeyPatch) -> None:
    chain, image_tok, text_tok = tiny_parts
    policy = TinyPolicy.build(tiny_policy_config(), text_tok, image_tok)
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    sampling = Sampling(temperature=1.0, top_p=0.9, image_temperature=1.0, max_text_tokens=10, max_new_tokens=200)
    assert llama_step.supports(policy.decoder)
    fast = policy.rollout(prompts, group_size=3, sampling=sampling, seed=7)
    monkeypatch.setattr(llama_step, "supports", lambda decoder: False)
    slow = policy.rollout(prompts, group_size=3, sampling=sampling, seed=7)
    assert torch.equal(fast.batch.completion_ids, slow.batch.completion_ids)
    assert torch.equal(fast.logprobs, slow.logprobs)
