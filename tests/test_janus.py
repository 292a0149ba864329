"""The Janus-Pro backbone on a tiny random Janus saved in the Janus-Pro folder layout and loaded
back with `from_pretrained`: the chain's seven blocks with Janus' 16x grids, log-probs that match
a teacher-forced pass, left-padded prompts, an SFT and a GRPO step, save/load identity, clear
errors for a wrong folder, and the same folder captioning photos for the `vlm` annotate backend."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from realsr_r1.config import VlmParams
from realsr_r1.policy.interface import TEACHER_FORCING, Sampling, SequenceBatch
from realsr_r1.policy.janus import JanusPolicy, JanusPolicyConfig
from realsr_r1.policy.janus_tiny import build_tiny_janus, bundled_texts
from realsr_r1.policy.loading import PolicyLoadError, load_policy
from realsr_r1.rewards.scoring import RewardBatch
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.grpo import GrpoConfig, collect, update
from realsr_r1.train.sft import sft_loss
from realsr_r1.vlcot import IMAGE_BLOCKS, VLCoT, parse
from tests.helpers import ragged

SAMPLING = Sampling(temperature=1.0, top_p=0.95, image_temperature=1.0, max_text_tokens=6, max_new_tokens=200)
CONFIG = JanusPolicyConfig(gt_size=64, scale=4)


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_janus(tmp_path_factory.mktemp("janus") / "Janus-Pro-tiny", bundled_texts())


@pytest.fixture(scope="module")
def chain(tiny_parts):
    return tiny_parts[0]


def fresh(janus_dir: Path) -> JanusPolicy:
    torch.manual_seed(0)
    return JanusPolicy.from_janus(janus_dir, CONFIG)


def test_folder_is_a_janus_pro_layout_of_a_few_million_parameters(janus_dir: Path) -> None:
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {p.name for p in janus_dir.iterdir()}
    assert json.loads((janus_dir / "config.json").read_text())["model_type"] == "janus"
    policy = fresh(janus_dir)
    n = sum(p.numel() for p in policy.parameters())
    assert 2e6 < n < 1e7
    assert policy.layout.image_grids == {"rough_image": (1, 1), "middle_image": (2, 2), "final_image": (4, 4)}
    assert not any(p.requires_grad for p in policy.model.model.vqmodel.parameters())  # Janus' VQ stays frozen


def test_rollout_makes_the_seven_blocks_on_janus_grids(janus_dir: Path, chain) -> None:
    policy = fresh(janus_dir)
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    assert (prompts.input_ids == policy.image_token_id).sum(1).eq(policy.model.config.vision_config.num_image_tokens).all()
    out = policy.rollout(prompts, group_size=2, sampling=SAMPLING, seed=1)
    for i, completion in enumerate(out.completions):
        parsed = parse(completion)
        for block, side in zip(IMAGE_BLOCKS, (16, 32, 64), strict=True):
            assert getattr(parsed, block).shape == (side, side, 3)
        assert int(out.image_mask[i].sum()) == 1 + 4 + 16
        ids = out.batch.completion_ids[i][out.batch.completion_mask[i]]
        assert ids[-1] == policy.layout.eos


@pytest.mark.parametrize("cfg", [None, 2.0])
def test_rollout_logprobs_equal_teacher_forced(janus_dir: Path, chain, cfg) -> None:
    policy = fresh(janus_dir)
    sampling = replace(SAMPLING, cfg=cfg)
    out = policy.rollout(policy.prompts(list(to_uint8(chain.lr[:2]))), group_size=2, sampling=sampling, seed=3)
    with torch.no_grad():
        scores = policy.score(out.batch, sampling)
    mask = out.batch.completion_mask
    assert torch.equal(scores.image_mask, out.image_mask) and torch.equal(scores.text_mask, out.text_mask)
    assert (scores.logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
    # each kind drew from its own head: text tokens below the codes, codes above
    ids = out.batch.completion_ids
    assert (ids[out.image_mask] >= policy.layout.code_offset).all() and (ids[out.text_mask] < policy.layout.code_offset).all()


def test_left_padded_prompts_score_as_each_prompt_alone(janus_dir: Path, chain) -> None:
    policy = fresh(janus_dir)
    prompts = policy.prompts(list(to_uint8(chain.lr[:2])))
    padded, alone = ragged(prompts, [4, 0], policy.text_tokenizer.pad_token_id)
    out = policy.rollout(padded, group_size=2, sampling=SAMPLING, seed=5)
    mask = out.batch.completion_mask
    with torch.no_grad():
        assert (policy.score(out.batch, SAMPLING).logprobs[mask] - out.logprobs[mask]).abs().max() < 1e-4
        for i, row in enumerate(alone):
            part = slice(2 * i, 2 * i + 2)
            single = SequenceBatch(row.repeat(2), out.batch.completion_ids[part], mask[part], out.batch.kinds[part])
            lp = policy.score(single, SAMPLING).logprobs
            assert (lp[mask[part]] - out.logprobs[part][mask[part]]).abs().max() < 1e-4


def targets(policy: JanusPolicy, chain, n: int):
    lr = to_uint8(chain.lr[:n])
    chains = [
        VLCoT("slight gaussian blur", "a photo", "a photo of a cat", "a grey cat on a red blanket",
              *(to_uint8(chain.images[k][i : i + 1])[0] for k in ("rough", "middle", "final")))
        for i in range(n)
    ]  # fmt: skip
    return policy.targets(policy.prompts(list(lr)), chains)


def test_one_sft_step_lowers_the_loss_and_changes_the_weights(janus_dir: Path, chain) -> None:
    policy = fresh(janus_dir).train()
    batch = targets(policy, chain, 2)
    assert int(batch.completion_mask.sum()) > 21  # texts + 21 codes + structure
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    backend = build_backend("plain", policy, OptimConfig(lr=2e-3, weight_decay=0.0, total_steps=4), device="cpu")
    losses = []
    for _ in range(3):
        with backend.autocast():
            loss, _ = sft_loss(policy.score(batch, TEACHER_FORCING), 1.0, 1.0, 0.0)
        backend.backward(loss)
        backend.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    after = policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("generation_head" in k for k in changed) and any("language_model" in k for k in changed)
    assert any("vision_model" in k for k in changed)  # the LR reaches the loss through the vision encoder
    assert not any("vqmodel" in k for k in changed)


def test_one_grpo_step_runs_and_changes_the_weights(janus_dir: Path, chain) -> None:
    policy = fresh(janus_dir)

    class Prompt:
        def __init__(self, lr: np.ndarray) -> None:
            self.lr = lr

    def reward(rollout, samples) -> RewardBatch:  # the share of image codes below the codebook's middle
        ids, image = rollout.batch.completion_ids, rollout.image_mask
        share = ((ids < policy.layout.code_offset + 256) & image).sum(1).double() / image.sum(1).double()
        return RewardBatch(rewards={"low": share.numpy()}, total=share.numpy(), non_finite={})

    cfg = GrpoConfig(steps=1, prompts=2, group_size=4)
    backend = build_backend("plain", policy, OptimConfig(lr=1e-2, weight_decay=0.0, total_steps=1), device="cpu")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    experience, _ = collect(policy, [Prompt(lr) for lr in to_uint8(chain.lr[:2])], cfg, SAMPLING, reward, None, seed=0)
    assert experience.advantages.abs().sum() > 0
    stats = update(policy, backend, experience, cfg, SAMPLING)
    assert np.isfinite(stats["loss"])
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_save_and_load_give_the_same_policy(janus_dir: Path, chain, tmp_path: Path) -> None:
    policy = fresh(janus_dir)
    with torch.no_grad():
        for p in policy.model.model.generation_head.parameters():
            p.add_(0.01)  # differ from the folder it came from
    policy.save_pretrained(tmp_path / "policy")
    loaded = load_policy(tmp_path / "policy")
    assert isinstance(loaded, JanusPolicy) and loaded.layout.vocab_size == policy.layout.vocab_size
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = targets(policy, chain, 2)
    with torch.no_grad():
        assert torch.equal(policy.score(batch, TEACHER_FORCING).logprobs, loaded.score(batch, TEACHER_FORCING).logprobs)
    # the saved janus/ folder is itself a Janus-Pro folder transformers loads alone
    from transformers import JanusForConditionalGeneration

    assert JanusForConditionalGeneration.from_pretrained(tmp_path / "policy" / "janus").config.model_type == "janus"


def test_a_wrong_folder_is_one_clear_error(janus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="no config.json"):
        JanusPolicy.from_janus(tmp_path, CONFIG)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(PolicyLoadError, match="model_type 'llama', not 'janus'"):
        JanusPolicy.from_janus(tmp_path, CONFIG)
    with pytest.raises(ValueError, match="gt_size 48"):
        JanusPolicy.from_janus(janus_dir, JanusPolicyConfig(gt_size=48, scale=4))


def test_the_same_folder_captions_photos_for_the_vlm_backend(janus_dir: Path, chain) -> None:
    """One download, two uses: `annotate.vlm.model` takes the Janus-Pro folder as it is."""
    from realsr_r1.annotate.vlm import VlmCaptioner

    captioner = VlmCaptioner(VlmParams(model=str(janus_dir), max_new_tokens=6, device="cpu"))
    assert "<image_placeholder>" in captioner.prompt_text("Describe the photo.")
    answers = captioner.answer(list(to_uint8(chain.images["final"][:2])), "Describe the photo.")
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert any(a.strip() for a in answers)  # a random model says something, not nothing


def test_init_policy_records_the_longest_block_in_janus_tokens(janus_dir: Path, tmp_path: Path) -> None:
    """`rollout.max_text_tokens: auto` needs the longest training block in the policy's own
    tokens: for Janus, `write_initial_policy` measures it with Janus' tokenizer."""
    from realsr_r1.config import load_params
    from realsr_r1.policy.settings import sampling, write_initial_policy
    from realsr_r1.tokenizers.text import block_ids
    from tests.helpers import REPO

    overrides = {"policy": {"backbone": "janus", "path": str(janus_dir)}, "rollout": {"max_text_tokens": "auto"}}
    params = load_params(REPO / "params.yaml", overrides)
    texts = ["a grey cat on a red blanket", "slight gaussian blur, heavy jpeg compression, medium noise, resize"]
    write_initial_policy(params, tmp_path / "unused", tmp_path / "init", texts)
    policy = load_policy(tmp_path / "init")
    longest = max(len(block_ids(policy.text_tokenizer, t)) for t in texts)
    assert sampling(params, policy).max_text_tokens == longest + params.rollout.text_margin
