"""The VLCoT layout and the tiny policy: prompts, teacher-forcing targets, scoring, save/load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from realsr_r1.config import Params
from realsr_r1.policy.interface import TEACHER_FORCING, Sampling
from realsr_r1.policy.layout import IMAGE
from realsr_r1.policy.loading import PolicyLoadError
from realsr_r1.policy.record import TrainingRecord
from realsr_r1.policy.settings import sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.tokenizers.text import load_text_tokenizer, record_longest_block
from realsr_r1.vlcot import Completion, parse
from tests.helpers import UNDERSTANDING, chains_of, tiny_policy_config


@pytest.fixture(scope="module")
def parts(tiny_parts):
    chain, image_tok, text_tok = tiny_parts
    policy = TinyPolicy.build(tiny_policy_config(), text_tok, image_tok)
    return chain, policy


def test_prompt_layout(parts) -> None:
    chain, policy = parts
    prompts = policy.prompts(list(to_uint8(chain.lr[:3])))
    lay = policy.layout
    assert prompts.input_ids.shape == prompts.uncond_ids.shape and prompts.input_ids.shape[0] == 3
    row = prompts.input_ids[0].tolist()
    assert row[0] == lay.bos
    start = row.index(lay.image_start)
    assert row[start + 1 : start + 1 + 16] == [lay.lr_patch] * 16 and row[start + 17] == lay.image_end
    blank = prompts.uncond_ids[0].tolist()  # CFG's unconditional prompt: the LR slots blanked
    assert lay.lr_patch not in blank and blank[start + 1 : start + 17] == [lay.image_placeholder] * 16
    with pytest.raises(ValueError, match="16x16"):
        policy.prompts([np.zeros((20, 20, 3), np.uint8)])


def test_targets_follow_the_layout_and_render_back(parts) -> None:
    chain, policy = parts
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    targets = policy.targets(prompts, chains_of(chain, 2))
    lay = policy.layout
    kinds = lay.replay(targets.completion_ids, targets.completion_mask, 64)
    assert int(((kinds == IMAGE) & targets.completion_mask).sum(1)[0]) == 4 + 16 + 64
    ids = targets.completion_ids[0][targets.completion_mask[0]].tolist()
    assert ids[-1] == lay.eos and ids.count(lay.row_end) == 2 + 4 + 8
    assert ids[ids.index(lay.image_start) + 1 : ids.index(lay.image_start) + 3] == [lay.grid[2], lay.grid[2]]
    text = lay.completion_text(ids)
    parsed = parse(Completion(text, (0, 1, 2)))
    assert parsed.degradation == "medium blur, downsample, heavy noise, light compression"
    assert parsed.final_understand == UNDERSTANDING[2]
    broken = targets.completion_ids.clone()
    broken[0, 0] = lay.close["degradation"]
    with pytest.raises(ValueError, match="leaves the VLCoT layout at token 0"):
        lay.replay(broken, targets.completion_mask, 64)


def test_score_is_a_differentiable_sft_loss(parts) -> None:
    chain, policy = parts
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    batch = policy.targets(prompts, chains_of(chain, 2))
    scores = policy.score(batch, Sampling(temperature=1.0, image_temperature=1.0))
    assert scores.logprobs.shape == batch.completion_ids.shape
    forced = ~scores.sampled_mask & batch.completion_mask
    assert torch.all(scores.logprobs[forced] == 0) and torch.all(scores.logprobs[scores.sampled_mask] < 0)
    loss = -scores.logprobs[scores.sampled_mask].mean()
    loss.backward()
    assert policy.projector.mlp[0].weight.grad.abs().sum() > 0
    assert policy.backbone.get_input_embeddings().weight.grad.abs().sum() > 0
    policy.zero_grad(set_to_none=True)


def test_score_takes_its_sampling_and_teacher_forcing_has_no_text_cap(parts) -> None:
    """No silent default temperature or text cap: SFT targets with a caption longer than the
    rollout's cap score under `TEACHER_FORCING` (temperature 1, no cap)."""
    chain, policy = parts
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    long = [replace(c, final_understand=" ".join([UNDERSTANDING[0]] * 20)) for c in chains_of(chain, 2)]
    batch = policy.targets(prompts, long)
    with pytest.raises(TypeError):
        policy.score(batch)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="leaves the VLCoT layout"):
        policy.score(batch, Sampling())  # the rollout's 64-token cap refuses the long caption
    with torch.no_grad():
        scores = policy.score(batch, TEACHER_FORCING)
        assert int(scores.text_mask[0].sum()) > 64 * 2 and torch.all(scores.logprobs[scores.sampled_mask] < 0)
        # temperature 1 on image codes: the model's own softmax over the codes, computed here directly
        p = prompts.input_ids.shape[1]
        logits = policy.logits(torch.cat([prompts.input_ids, batch.completion_ids], 1), prompts.lr)[:, p - 1 : -1]
        codes = torch.log_softmax(logits[..., policy.layout.code_offset :], -1)
        img = scores.image_mask
        want = codes[img].gather(-1, (batch.completion_ids[img] - policy.layout.code_offset).unsqueeze(-1)).squeeze(-1)
        assert (scores.logprobs[img] - want).abs().max() < 1e-5


def test_auto_text_cap_follows_the_longest_training_block(parts, tmp_path: Path) -> None:
    """`rollout.max_text_tokens: auto` = the longest block the tokenizer recorded + margin, so the
    longest training caption is never cut (a fixed 64 cut the 95-token captions: format 0)."""
    chain, policy = parts
    long_caption = " ".join([UNDERSTANDING[0]] * 12)
    targets = [replace(c, final_understand=long_caption) for c in chains_of(chain, 2)]
    policy.text_tokenizer.save_pretrained(tmp_path / "text")  # a copy: the shared tokenizer stays as it is
    text = load_text_tokenizer(tmp_path / "text")
    blocks = [t for c in targets for t in (c.degradation, c.rough_understand, c.middle_understand, c.final_understand)]
    longest = record_longest_block(text, blocks)
    assert longest == len(text.encode(long_caption, add_special_tokens=False)) > 64
    text.save_pretrained(tmp_path / "text")  # the record travels with the tokenizer (into every policy dir)
    own = TinyPolicy(policy.config, policy.backbone, load_text_tokenizer(tmp_path / "text"), policy.image_tokenizer)
    params = Params()
    cap = sampling(params, own)
    assert cap.max_text_tokens == longest + params.rollout.text_margin
    batch = own.targets(own.prompts(list(to_uint8(chain.lr[:2]))), targets)
    with torch.no_grad():
        assert own.score(batch, cap).text_mask.any()  # the longest target fits under the cap
        with pytest.raises(ValueError, match="leaves the VLCoT layout"):
            own.score(batch, replace(cap, max_text_tokens=longest - 1))
    assert sampling(Params.model_validate({"rollout": {"max_text_tokens": 40}}), own).max_text_tokens == 40
    with pytest.raises(ValueError, match="rollout.max_text_tokens: auto"):
        sampling(params, policy)  # a tokenizer without the record: one clear line


def test_the_lr_enters_through_the_projector(parts) -> None:
    chain, policy = parts
    a = policy.prompts(list(to_uint8(chain.lr[:1])))
    b = policy.prompts(list(to_uint8(chain.lr[1:2])))
    assert torch.equal(a.input_ids, b.input_ids)
    with torch.no_grad():
        assert not torch.allclose(policy.logits(a.input_ids, a.lr), policy.logits(b.input_ids, b.lr))


def test_save_load_identity(parts, tmp_path: Path) -> None:
    chain, policy = parts
    policy.save_pretrained(tmp_path / "p")
    back = TinyPolicy.from_pretrained(tmp_path / "p")
    assert back.config == policy.config and back.layout.vocab_size == policy.layout.vocab_size
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    batch = policy.targets(prompts, chains_of(chain, 2))
    with torch.no_grad():
        assert torch.equal(back.score(batch, TEACHER_FORCING).logprobs, policy.score(batch, TEACHER_FORCING).logprobs)
    assert (tmp_path / "p/backbone/model.safetensors").is_file() and (tmp_path / "p/projector.safetensors").is_file()
    with pytest.raises(PolicyLoadError, match="missing policy.json"):
        TinyPolicy.from_pretrained(tmp_path / "nothing")
    # the training record: empty for a built policy, appended by training, kept by save/load
    assert back.record == TrainingRecord() and not back.record.trained
    back.record = back.record.then("sft", steps=3)
    back.save_pretrained(tmp_path / "q")
    again = TinyPolicy.from_pretrained(tmp_path / "q")
    assert again.record.trained and again.record.runs == ({"stage": "sft", "steps": 3},)
    assert again.record.describe() == "trained by sft"
    (tmp_path / "q/training.json").write_text("{}")
    with pytest.raises(ValueError, match="training.json: not a training record"):
        TinyPolicy.from_pretrained(tmp_path / "q")
    (tmp_path / "q/training.json").unlink()
    assert TinyPolicy.from_pretrained(tmp_path / "q").record is None  # older checkpoint: unknown


def test_lr_as_image_codes(tiny_image_parts, tiny_parts) -> None:
    chain, image_tok, text_tok = tiny_image_parts
    policy = TinyPolicy.build(tiny_policy_config(lr_input="codes"), text_tok, image_tok)
    assert policy.projector is None
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    lay = policy.layout
    row = prompts.input_ids[0].tolist()
    start = row.index(lay.image_start)
    assert row[start + 1 : start + 3] == [lay.grid[2], lay.grid[2]] and row[start + 3] >= lay.code_offset
    blank = prompts.uncond_ids[0].tolist()
    assert lay.image_placeholder in blank and max(blank) < lay.code_offset and lay.lr_patch not in row
    out = policy.rollout(prompts, 2, Sampling(max_text_tokens=8))
    assert all(c is not None for c in out.chains)
    with pytest.raises(ValueError, match="residual: false"):
        TinyPolicy.build(tiny_policy_config(lr_input="codes"), text_tok, tiny_parts[1])


def test_a_text_tokenizer_without_the_layout_tokens_is_refused(parts) -> None:
    from realsr_r1.tokenizers.text import train_text_tokenizer

    _, policy = parts
    small = train_text_tokenizer(["a cat on a sofa"] * 4, vocab_size=300, min_frequency=1, max_grid=4)
    with pytest.raises(ValueError, match=r"lacks the layout tokens \['<\|grid_5\|>'.*max_grid >= 8"):
        TinyPolicy.build(tiny_policy_config(), small, policy.image_tokenizer)
