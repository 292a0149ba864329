"""GRPO: the loss against a straightforward per-token computation of the DeepSeekMath formula,
group advantages, zero gradient from zero-advantage groups, and a toy bandit a tiny policy learns."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.rewards.scoring import RewardBatch
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.grpo import (
    GrpoConfig,
    LossConfig,
    collect,
    group_advantages,
    grpo_loss,
    token_advantages,
    update,
)
from tests.helpers import grpo_project, kill_once_written, run_grpo, tiny_policy_config


def reference_loss(lp, old, adv, text, image, cfg: LossConfig, ref=None) -> float:
    """DeepSeekMath's objective written out token by token with Python floats."""
    rows, total, count = [], 0.0, 0
    for i in range(len(lp)):
        row_sum, row_n = 0.0, 0
        for t in range(len(lp[i])):
            if not (text[i][t] or image[i][t]):
                continue
            ratio = math.exp(lp[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - cfg.epsilon), 1 + cfg.upper)
            term = -min(ratio * adv[i], clipped * adv[i])
            if cfg.beta:
                term += cfg.beta * (math.exp(ref[i][t] - lp[i][t]) - (ref[i][t] - lp[i][t]) - 1)
            term *= cfg.text_weight if text[i][t] else cfg.image_weight
            row_sum, row_n = row_sum + term, row_n + 1
        rows.append(row_sum / max(row_n, 1))
        total, count = total + row_sum, count + row_n
    if cfg.loss_type == "grpo":
        return sum(rows) / len(rows)
    if cfg.loss_type == "dapo":
        return total / count
    return total / (len(lp) * cfg.max_tokens)


@pytest.fixture
def batch():
    """4 samples x 6 tokens with ratios on both sides of the clip range and both signs of advantage."""
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=g) * 3 - 0.1
    shift = torch.tensor([[0.5, -0.5, 0.05, 0.0, 0.4, -0.3]] * 4)  # ratios 1.65, 0.61, 1.05, 1, 1.49, 0.74
    lp = old + shift
    ref = old + torch.randn(4, 6, generator=g) * 0.3
    adv = torch.tensor([1.5, -0.7, 0.3, -1.2])
    text = torch.tensor([[1, 1, 0, 0, 0, 0]] * 4, dtype=torch.bool)
    image = torch.tensor([[0, 0, 1, 1, 1, 0]] * 4, dtype=torch.bool)
    image[3, 4] = False  # ragged: row 3 has one token fewer
    return lp, old, adv, text, image, ref


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("epsilon_high", [None, 0.28])
def test_loss_equals_the_formula_token_by_token(batch, loss_type, beta, epsilon_high) -> None:
    lp, old, adv, text, image, ref = batch
    cfg = LossConfig(epsilon=0.2, epsilon_high=epsilon_high, beta=beta, loss_type=loss_type, text_weight=0.5, image_weight=2.0, max_tokens=9)
    loss, stats = grpo_loss(lp, old, adv, text, image, cfg, ref)
    expected = reference_loss(lp.tolist(), old.tolist(), adv.tolist(), text.tolist(), image.tolist(), cfg, ref.tolist())
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # clipping is active on both sides in this batch: positive advantages above 1 + eps and
    # negative ones below 1 - eps
    assert stats["clip_high"] > 0 and stats["clip_low"] > 0
    assert (stats["kl"] > 0) == bool(beta)


def test_clip_higher_changes_what_is_clipped(batch) -> None:
    lp, old, adv, text, image, _ = batch
    symmetric = grpo_loss(lp, old, adv, text, image, LossConfig(epsilon=0.2))[1]["clip_high"]
    higher = grpo_loss(lp, old, adv, text, image, LossConfig(epsilon=0.2, epsilon_high=0.55))[1]["clip_high"]
    assert higher < symmetric


def test_gradient_matches_the_formula(batch) -> None:
    lp, old, adv, text, image, ref = batch
    cfg = LossConfig(beta=0.04, loss_type="dapo")
    lp = lp.clone().requires_grad_(True)
    grpo_loss(lp, old, adv, text, image, cfg, ref)[0].backward()
    # d/dlp of -min(r A, clip(r) A) is -r A where the unclipped term is the minimum, else 0;
    # of beta k3: beta (1 - exp(ref - lp)); divided by the batch's token count
    r = torch.exp(lp.detach() - old)
    unclipped = (r * adv[:, None]) <= (r.clamp(0.8, 1.2) * adv[:, None])
    grad = torch.where(unclipped, -r * adv[:, None], torch.zeros_like(r)) + cfg.beta * (1 - torch.exp(ref - lp.detach()))
    mask = text | image
    expected = torch.where(mask, grad, torch.zeros_like(grad)) / mask.sum()
    assert torch.allclose(lp.grad, expected, atol=1e-6)


def test_group_advantages() -> None:
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(r, 4, "group", eps=1e-4)
    first = np.array([1.0, 2.0, 3.0, 6.0])
    assert np.allclose(adv[:4].numpy(), (first - first.mean()) / (first.std(ddof=1) + 1e-4), atol=1e-6)
    assert torch.equal(adv[4:], torch.zeros(4))  # equal rewards: exactly 0, no NaN
    batch_scaled = group_advantages(r, 4, "batch")
    assert np.allclose(batch_scaled[:4].numpy(), (first - first.mean()) / (r.numpy().std(ddof=1) + 1e-4), atol=1e-6)
    assert torch.allclose(group_advantages(r, 4, "none")[:4], torch.tensor(first - first.mean(), dtype=torch.float32))
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r, 3)
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(r, 1)


def test_zero_advantage_groups_give_zero_gradient(batch) -> None:
    lp, old, _, text, image, _ = batch
    lp = lp.clone().requires_grad_(True)
    adv = group_advantages(torch.tensor([0.3, 0.3, 1.0, 0.0]), 2)  # group 0 all equal, group 1 not
    grpo_loss(lp, old, adv, text, image, LossConfig())[0].backward()
    assert torch.equal(lp.grad[:2], torch.zeros(2, 6))
    assert lp.grad[2:].abs().sum() > 0


@dataclass(frozen=True)
class Prompt:
    lr: np.ndarray


def test_a_tiny_policy_learns_a_code_bandit(tiny_parts) -> None:
    """Rewarded for the share of its image codes equal to one code: from chance (1/64) to > 0.9."""
    chain, image_tok, text_tok = tiny_parts
    torch.manual_seed(0)
    policy = TinyPolicy.build(tiny_policy_config(num_layers=1), text_tok, image_tok)
    sampling = Sampling(temperature=1.0, top_p=1.0, image_temperature=1.0, max_text_tokens=3, max_new_tokens=400)
    prompts = [Prompt(lr) for lr in to_uint8(chain.lr[:4])]
    target = 7 + policy.layout.code_offset

    def reward(rollout, samples) -> RewardBatch:
        ids, image = rollout.batch.completion_ids, rollout.image_mask
        share = ((ids == target) & image).sum(1).double() / image.sum(1).double()
        return RewardBatch(rewards={"code": share.numpy()}, total=share.numpy(), non_finite={})

    cfg = GrpoConfig(steps=40, prompts=4, group_size=8, updates=2, loss=LossConfig(loss_type="dapo"))
    backend = build_backend("plain", policy, OptimConfig(lr=3e-2, weight_decay=0.0, total_steps=80), device="cpu")
    means = []
    for step in range(cfg.steps):
        experience, _ = collect(policy, prompts, cfg, sampling, reward, None, seed=step)
        means.append(float(experience.rewards.total.mean()))
        update(policy, backend, experience, cfg, sampling)
        if means[-1] > 0.9:
            break
    assert means[0] < 0.1, means[:3]
    assert means[-1] > 0.9, f"mean reward after {len(means)} steps: {means[-5:]}"


def _final_codes(rollout, row: int, cells: int) -> torch.Tensor:
    """Positions of a row's final-image codes: its last `cells` image codes (raster order)."""
    return rollout.image_mask[row].nonzero().squeeze(1)[-cells:]


def _cell_bandit(policy, target: int):
    """Reward: the share of final-image codes equal to `target`, split per cell (1 where it is)."""
    grid = policy.layout.image_grids["final_image"]
    n = grid[0] * grid[1]

    def reward(rollout, samples) -> RewardBatch:
        hits = [(rollout.batch.completion_ids[i, _final_codes(rollout, i, n)] == target).double().numpy() for i in range(len(rollout))]
        total = np.array([h.mean() for h in hits])
        return RewardBatch(rewards={"code": total}, total=total, non_finite={}, cells=[h.reshape(grid) for h in hits])

    return reward, n


def test_cell_credit_puts_each_cells_advantage_on_its_own_code(tiny_parts) -> None:
    """Under `cell` credit a final-image code gets its cell's group advantage; text, the rough and
    middle images and every token of a group with an unsplit sample keep the sample's."""
    chain, image_tok, text_tok = tiny_parts
    torch.manual_seed(0)
    policy = TinyPolicy.build(tiny_policy_config(num_layers=1), text_tok, image_tok)
    sampling = Sampling(max_text_tokens=3, max_new_tokens=400)
    cfg = GrpoConfig(steps=1, prompts=2, group_size=3, image_credit="cell")
    bandit, n = _cell_bandit(policy, 7 + policy.layout.code_offset)

    def reward(rollout, samples) -> RewardBatch:
        out = bandit(rollout, samples)
        rng = np.random.default_rng(0)
        cells = [rng.random(c.shape) for c in out.cells]
        cells[4] = None  # the second group has a sample with no final image to split
        return replace(out, total=np.array([c.mean() if c is not None else 0.0 for c in cells]), cells=cells)

    experience, _ = collect(policy, [Prompt(lr) for lr in to_uint8(chain.lr[:2])], cfg, sampling, reward, None, seed=0)
    r, adv, rewards = experience.rollout, experience.advantages, experience.rewards
    sequence = group_advantages(torch.as_tensor(rewards.total, dtype=torch.float32), 3)
    values = torch.as_tensor(np.stack([c.ravel() for c in rewards.cells[:3]], 1), dtype=torch.float32)
    per_cell = group_advantages(values.flatten(), 3).view(-1, 3)
    for row in range(6):
        final = torch.zeros_like(r.image_mask[row])
        final[_final_codes(r, row, n)] = True
        others = r.sampled_mask[row] & ~final
        assert torch.equal(adv[row, others], sequence[row].expand(int(others.sum())))
        expected = per_cell[:, row] if row < 3 else sequence[row].expand(n)
        assert torch.equal(adv[row, final], expected)
    assert torch.equal(token_advantages(r, rewards, replace(cfg, image_credit="sequence")), sequence[:, None].expand_as(adv))
    with pytest.raises(ValueError, match="split over cells"):
        token_advantages(r, replace(rewards, cells=None), cfg)


def test_cell_credit_learns_a_per_cell_bandit_sooner_than_sequence_credit(tiny_parts) -> None:
    """The same rollouts budget: crediting each code with its own cell lifts the share of wanted
    codes from chance well past what one number per sample reaches."""
    chain, image_tok, text_tok = tiny_parts
    sampling = Sampling(max_text_tokens=3, max_new_tokens=400)
    prompts = [Prompt(lr) for lr in to_uint8(chain.lr[:4])]
    reached = {}
    for credit in ("sequence", "cell"):
        torch.manual_seed(0)
        policy = TinyPolicy.build(tiny_policy_config(num_layers=1), text_tok, image_tok)
        reward, _ = _cell_bandit(policy, 7 + policy.layout.code_offset)
        cfg = GrpoConfig(steps=10, prompts=4, group_size=4, image_credit=credit, loss=LossConfig(loss_type="dapo"))
        backend = build_backend("plain", policy, OptimConfig(lr=1e-2, weight_decay=0.0, total_steps=cfg.steps), device="cpu")
        for step in range(cfg.steps):
            experience, _ = collect(policy, prompts, cfg, sampling, reward, None, seed=step)
            update(policy, backend, experience, cfg, sampling)
        reached[credit] = float(experience.rewards.total.mean())
    assert reached["cell"] > 2 * reached["sequence"] and reached["cell"] > 0.25, reached


def test_one_update_on_the_rollout_is_reinforce(tiny_parts) -> None:
    """With one update the ratio is 1 (the rollout's log-probs are the sampling distribution's),
    so nothing is clipped and the loss is -mean(A) per token, as the paper's preset needs."""
    chain, image_tok, text_tok = tiny_parts
    policy = TinyPolicy.build(tiny_policy_config(), text_tok, image_tok)
    sampling = Sampling(max_text_tokens=3, max_new_tokens=400)
    cfg = GrpoConfig(steps=1, prompts=2, group_size=3)

    def reward(rollout, samples) -> RewardBatch:
        total = np.arange(len(rollout), dtype=np.float64) % 3
        return RewardBatch(rewards={"r": total}, total=total, non_finite={})

    experience, _ = collect(policy, [Prompt(lr) for lr in to_uint8(chain.lr[:2])], cfg, sampling, reward, None, seed=0)
    with torch.no_grad():
        scores = policy.score(experience.rollout.batch, sampling)
    r = experience.rollout
    loss, stats = grpo_loss(scores.logprobs, r.logprobs, experience.advantages, r.text_mask, r.image_mask, replace(cfg.loss))
    assert stats["clip_low"] == stats["clip_high"] == 0
    assert float(loss) == pytest.approx(-float(experience.advantages.mean()), abs=1e-4)


# ------------------------------------------------------------------------------ the stage
@pytest.mark.stage
def test_stage_resumes_after_sigkill_to_bit_identical_weights(tmp_path, tiny_parts) -> None:
    import json
    import shutil

    from safetensors.torch import load_file

    whole = grpo_project(tmp_path / "whole", tiny_parts, beta=0.04, updates=2)
    other = tmp_path / "killed"
    shutil.copytree(whole, other)
    first = run_grpo(whole)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "step 4: reward" in err  # the per-step figures reach the log (and so a Prefect run)

    kill_once_written(run_grpo(other, start_new_session=True), other / "checkpoints/grpo/step-0000002")
    assert not (other / "models/grpo").exists()
    resumed = run_grpo(other)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed from" in err, err

    a = load_file(str(whole / "models/grpo/backbone/model.safetensors"))
    b = load_file(str(other / "models/grpo/backbone/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(whole / "models/sft/backbone/model.safetensors"))
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    assert (other / "plots/grpo/train.csv").read_bytes() == (whole / "plots/grpo/train.csv").read_bytes()
    header = (whole / "plots/grpo/train.csv").read_text().splitlines()[0].split(",")
    for column in ("reward", "format_mean", "generation_std", "advantage_std", "zero_advantage_groups", "kl", "clip_low",
                   "clip_high", "entropy_text", "entropy_image", "completion_length", "text_length", "truncated"):  # fmt: skip
        assert column in header
    assert not {"rollout_s", "reward_s", "update_s"} & set(header)  # timing lives in speed.csv
    metrics = json.loads((whole / "metrics/grpo.json").read_text())
    assert metrics["steps"] == 4 and set(metrics) == {"steps", "sft", "grpo"}
    for model in ("sft", "grpo"):
        assert set(metrics[model]["rewards"]) == {"format", "degradation", "understanding", "generation", "total"}
        assert {"sampled", "expected", "bicubic"} <= set(metrics[model]["seams"]) and "expected" in metrics[model]["psnr_y"]
    assert json.loads((other / "metrics/grpo.json").read_text()) == metrics
    assert TinyPolicy.from_pretrained(whole / "models/grpo").record.runs[-1] == {"stage": "grpo", "steps": 4}


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_beta_zero_never_loads_a_reference_model(beta, tmp_path, tiny_parts, monkeypatch) -> None:
    import stages.grpo as stage
    from realsr_r1.config import load_params

    root = grpo_project(tmp_path, tiny_parts, beta=beta)
    monkeypatch.chdir(root)
    loaded, seen = [], {}
    real_load = stage.load_policy
    monkeypatch.setattr(stage, "load_policy", lambda *a, **k: loaded.append(a[0]) or real_load(*a, **k))

    class Stop(Exception):
        pass

    def capture(policy, backend, stream, cfg, sampling, reward, checkpoints, reference=None, on_step=None):
        seen["reference"] = reference
        raise Stop

    monkeypatch.setattr(stage, "train_grpo", capture)
    with pytest.raises(Stop):
        stage.main(load_params(root / "params.yaml"))
    if beta:
        assert isinstance(seen["reference"], TinyPolicy) and loaded == [stage.START]
        assert not any(p.requires_grad for p in seen["reference"].parameters())
    else:
        assert seen["reference"] is None and loaded == []


@pytest.mark.stage
def test_grpo_refuses_zero3(tmp_path, tiny_parts) -> None:
    root = grpo_project(tmp_path, tiny_parts, launcher="deepspeed", num_processes=2, deepspeed="zero3")
    done = run_grpo(root)
    _, err = done.communicate(timeout=300)
    assert done.returncode == 2 and "grpo.deepspeed: ZeRO-3 is not supported" in err
    assert not (root / "models/grpo").exists()


@pytest.mark.stage
@pytest.mark.distributed
def test_stage_under_zero2_on_two_cpu_ranks(tmp_path, tiny_parts) -> None:
    """The same stage under the DeepSpeed launcher: each rank rolls out its own prompts (2 train shards,
    one per rank), the update averages their gradients, rank 0 writes the outputs."""
    from safetensors.torch import load_file

    root = grpo_project(tmp_path, tiny_parts, shard_size=12, steps=2, launcher="deepspeed", num_processes=2, deepspeed="zero2")
    done = run_grpo(root)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-4000:]
    assert "DeepSpeed ZeRO-2 (zero2.json) on 2 x cpu" in err and "step 2: reward" in err
    a = load_file(str(root / "models/grpo/backbone/model.safetensors"))
    start = load_file(str(root / "models/sft/backbone/model.safetensors"))
    assert a.keys() == start.keys() and any(not torch.equal(a[k], start[k]) for k in a)
    assert {"client-rank0.pt", "client-rank1.pt"} <= {p.name for p in (root / "checkpoints/grpo/step-0000002").iterdir()}


def test_sft_figures_are_reused_only_for_the_same_samples_and_seed(tmp_path, monkeypatch) -> None:
    import json

    from realsr_r1.config import Params
    from stages.grpo import sft_figures

    monkeypatch.chdir(tmp_path)
    assert sft_figures(Params()) is None  # no sft metrics: measured by the stage
    final = {"rewards": {"total": 1.5}, "psnr_y": {"expected": 22.0}}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/sft.json").write_text(json.dumps({"final": {"step": 150, **final}, "early": {"step": 25}}))
    assert sft_figures(Params()) == final
    assert sft_figures(Params.model_validate({"sft": {"seed": 1}})) is None
