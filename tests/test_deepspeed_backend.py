"""The DeepSpeed backend on 2 CPU processes (gloo) against the plain engine.

ZeRO over two ranks must train the tiny policy to the same weights as `PlainBackend` in one
process on the whole batch (same AdamW, schedule, accumulation and clipping); what it saves
must load with `from_pretrained`; a run resumed from its mid-way checkpoint must end bit-identical.
The stage itself under ZeRO-3 on two ranks (dropout on, so each rank's own RNG matters) must save
the weights gathered from the shards and resume to the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from realsr_r1.policy.interface import TEACHER_FORCING
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import to_uint8
from realsr_r1.train.backend import OptimConfig
from realsr_r1.train.launch import relaunch
from realsr_r1.train.plain import PlainBackend
from tests.helpers import chains_of, project, run_sft, tiny_policy_config, weights

pytestmark = pytest.mark.distributed

WORLD, ROWS, STEPS = 2, 4, 4  # ranks, rows per global micro-batch, optimizer steps
OPTIM = OptimConfig(lr=3e-3, weight_decay=0.1, grad_clip=0.5, warmup_steps=1, total_steps=STEPS, schedule="cosine", grad_accum=2)


def reference(init: Path, micro: list, optim: OptimConfig) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The plain engine: one process, the whole micro-batch, `PlainBackend`'s optimizer and schedule."""
    torch.manual_seed(0)
    policy = TinyPolicy.from_pretrained(init)
    backend = PlainBackend(policy, optim)
    losses = []
    for step in range(STEPS):
        total = 0.0
        for m in range(optim.grad_accum):
            batch, count = micro[step * optim.grad_accum + m]
            scores = policy.score(batch, TEACHER_FORCING)
            loss = -scores.logprobs[scores.sampled_mask].sum() / count
            backend.backward(loss)
            total += loss.item() / optim.grad_accum
            backend.step()
        losses.append(total)
    return backend.full_state_dict(), losses


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_zero_on_two_cpu_processes_matches_the_plain_loop_and_saves_loadable_weights(tiny_parts, tmp_path, zero) -> None:
    chain, image_tok, text_tok = tiny_parts
    TinyPolicy.build(tiny_policy_config(), text_tok, image_tok).save_pretrained(tmp_path / "init")
    policy = TinyPolicy.from_pretrained(tmp_path / "init")
    chains = chains_of(chain, 8)
    micro = []
    for i in range(STEPS * OPTIM.grad_accum):
        idx = [(i * ROWS + r) % len(chains) for r in range(ROWS)]
        prompts = policy.prompts(list(to_uint8(chain.lr[idx])))
        batch = policy.targets(prompts, [chains[j] for j in idx])
        count = int(policy.score(batch, TEACHER_FORCING).sampled_mask.sum())
        micro.append((batch, count))
    torch.save(micro, tmp_path / "batches.pt")
    (tmp_path / "spec.json").write_text(json.dumps({"optim": asdict(OPTIM), "steps": STEPS, "rows": ROWS // WORLD}))

    env = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = relaunch("tests.ds_worker", "deepspeed", WORLD, [str(tmp_path), zero])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert code == 0

    result = torch.load(tmp_path / "result.pt", weights_only=True)
    straight, resumed = result["straight"], result["resumed"]
    losses = json.loads((tmp_path / "losses.json").read_text())
    want, want_losses = reference(tmp_path / "init", micro, OPTIM)

    assert result["client"]["step"] == STEPS // 2 and result["client"]["losses"] == losses[: STEPS // 2]
    assert straight.keys() == want.keys()
    for name, w in want.items():
        torch.testing.assert_close(straight[name], w, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        assert torch.equal(resumed[name], straight[name]), f"{name}: resumed run differs"
    assert losses == pytest.approx(want_losses, rel=1e-5)
    assert losses[-1] < losses[0]
    init = TinyPolicy.from_pretrained(tmp_path / "init").state_dict()
    assert any(not torch.equal(init[k], straight[k]) for k in init), "training changed no weight"

    loaded = TinyPolicy.from_pretrained(tmp_path / "final").state_dict()
    for name, w in straight.items():
        assert torch.equal(loaded[name], w), f"{name}: from_pretrained differs from the gathered weights"


@pytest.mark.stage
def test_stage_under_zero3_on_two_ranks_saves_the_gathered_weights_and_resumes_bit_identical(tmp_path, tiny_parts) -> None:
    sft = {"launcher": "deepspeed", "num_processes": 2, "deepspeed": "zero3"}
    root = project(tmp_path / "run", tiny_parts, shard_size=12, **sft)  # 2 train shards: one per rank
    first = run_sft(root)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    assert "DeepSpeed ZeRO-3 (zero3.json) on 2 x cpu" in err

    # the saved policy holds the fp32 weights DeepSpeed's own tool consolidates from the last checkpoint
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    last = root / "checkpoints/sft/step-0000006"
    assert {"client-rank0.pt", "client-rank1.pt"} <= {p.name for p in last.iterdir()}
    gathered = get_fp32_state_dict_from_zero_checkpoint(str(last), tag="state")
    policy = TinyPolicy.from_pretrained(root / "models/sft")
    saved = policy.state_dict()
    assert {name for name, _ in policy.named_parameters()} <= gathered.keys() <= saved.keys()
    for name, w in gathered.items():
        assert torch.equal(saved[name], w), f"{name}: models/sft differs from the gathered checkpoint"
    init = TinyPolicy.from_pretrained(root / "models/policy_init").state_dict()
    assert any(not torch.equal(init[k], saved[k]) for k in gathered), "training changed no weight"
    metrics = json.loads((root / "metrics/sft.json").read_text())
    assert metrics["early"]["step"] == 3 and metrics["final"]["step"] == 6 and metrics["final"]["psnr_y"]

    # resumed from step 4: each rank continues from its own RNG state and data position
    other = tmp_path / "resumed"
    shutil.copytree(root, other)
    for path in ("models/sft", "metrics", "plots", "checkpoints/sft/step-0000006"):
        shutil.rmtree(other / path)
    again = run_sft(other)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-4000:]
    assert "resumed from checkpoints/sft/step-0000004" in err
    a, b = weights(root), weights(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"
