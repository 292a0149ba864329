"""GRPO step throughput: this project's trainer vs TRL's `GRPOTrainer` on the same model and reward.

Both sides train a copy of the pipeline's `models/sft` (the tiny Llama-style decoder; TRL gets its
`backbone/`, loaded with `from_pretrained`) on the same prompts (the VLCoT prompt, `--prompts` per
step, G = 4 samples each), with a text-only reward: the share of the completion's words that are
degradation words (blur, noise, compression, ...), on the text decoded with its tags. Completions are capped at 256 tokens: ours end
with the chain (about 240 tokens for the SFT model) or at `max_new_tokens` = 256, TRL's run with
`min_new_tokens` = 256; throughput is therefore counted in tokens and reported as completions of
256 tokens per second (tokens/s / 256), so the shorter chains earn ours nothing. Same sampling
temperature (1.0, no top-p), AdamW at the same learning rate, the per-sequence mean loss
(`loss_type: grpo`), one update per rollout, no gradient checkpointing, beta 0 (no reference
model) and 0.04 (k3 KL to a frozen copy). Ours: the stage's own `collect` + `update` (rollout engine, rewards, advantages,
`grpo_loss`) through the plain backend. Theirs: `GRPOTrainer.train()` (`model.generate`, its
loss), timed between consecutive optimizer steps by a callback. The first `--warmup` steps are
not timed. The host is shared, so the two sides alternate for `--rounds` rounds (ours, TRL,
ours, TRL, ...) and each side's figure is the median over all its timed steps: a slow minute
hits both sides alike. Prints completions/s and seconds per optimizer step, the ratio ours / TRL last.

TRL lives outside the project environment (`make .trl/.installed`: `pip install --no-deps
--target .trl trl==1.16.0`); the library never imports it.

    python bench/grpo.py [--steps 3] [--warmup 1] [--rounds 3] [--prompts 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
import torch

from realsr_r1.policy.interface import Rollout, Sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.rewards.scoring import RewardBatch
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.grpo import GrpoConfig, LossConfig, collect, update

ROOT = Path(__file__).resolve().parents[1]
TRL = ROOT / ".trl"
G = 4
TOKENS = 256
LR = 1e-5
# the words of the degradation descriptions: a reward any decoded text can earn, tags or not
WORDS = frozenset(["light", "medium", "heavy", "blur", "noise", "compression", "downsample", "upsample", "ringing", "sinc"])


@dataclass(frozen=True)
class Prompt:
    lr: np.ndarray  # what `collect` reads of a sample


def text_reward(texts: list[str]) -> list[float]:
    """The share of each text's words that are degradation words (0 for a text without words)."""
    words = [re.findall(r"[a-z]+", t.lower()) for t in texts]
    return [sum(w in WORDS for w in ws) / len(ws) if ws else 0.0 for ws in words]


def prompts(policy: TinyPolicy, n: int) -> list[Prompt]:
    """`n` LR photos of the model's size: real photos, area-downscaled."""
    import cv2

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    side = policy.lr_size
    return [Prompt(cv2.resize(photos[i % len(photos)], (side, side), interpolation=cv2.INTER_AREA)) for i in range(n)]


def ours(start: Path, beta: float, steps: int, warmup: int, n_prompts: int) -> list[tuple[float, int]]:
    """(seconds, completion tokens) of each timed optimizer step of the project's GRPO loop body
    (collect + update)."""
    policy = TinyPolicy.from_pretrained(start)
    reference = TinyPolicy.from_pretrained(start).requires_grad_(False) if beta else None
    sampling = Sampling(temperature=1.0, top_p=1.0, image_temperature=1.0, max_text_tokens=None, max_new_tokens=TOKENS)
    cfg = GrpoConfig(steps=steps, prompts=n_prompts, group_size=G, loss=LossConfig(beta=beta, max_tokens=TOKENS))
    backend = build_backend("plain", policy, OptimConfig(lr=LR, weight_decay=0.0, total_steps=steps + warmup), device=torch.device("cpu"))
    batch = prompts(policy, n_prompts)

    def reward(rollout: Rollout, samples: list[Prompt]) -> RewardBatch:
        r = np.asarray(text_reward([c.text for c in rollout.completions]))
        return RewardBatch({"degradation": r}, r, {})

    policy.train()
    timed = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        experience, _ = collect(policy, batch, cfg, sampling, reward, reference, seed=step)
        update(policy, backend, experience, cfg, sampling)
        timed.append((time.perf_counter() - started, int(experience.rollout.batch.completion_mask.sum())))
    return timed[warmup:]


def trl(start: Path, beta: float, steps: int, warmup: int, n_prompts: int) -> list[tuple[float, int]]:
    """(seconds, completion tokens) of each timed optimizer step of TRL's `GRPOTrainer` on the
    same backbone, prompts and reward."""
    sys.path.insert(0, str(TRL))
    from datasets import Dataset
    from transformers import LlamaForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    policy = TinyPolicy.from_pretrained(start)
    tokenizer = policy.text_tokenizer
    tokenizer.padding_side = "left"
    prompt = tokenizer.decode(policy.layout.prompt_ids(), skip_special_tokens=False)
    model = LlamaForCausalLM.from_pretrained(start / "backbone")
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    lengths: list[int] = []

    def reward(completions: list[str], completion_ids: list[list[int]], **_: object) -> list[float]:
        lengths.extend(len(c) for c in completion_ids)  # TRL's text drops the block tags (special tokens): decode with them
        return text_reward(tokenizer.batch_decode(completion_ids, skip_special_tokens=False))

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=n_prompts * G, num_generations=G, max_completion_length=TOKENS,
            generation_kwargs={"min_new_tokens": TOKENS}, temperature=1.0, top_p=1.0, beta=beta, learning_rate=LR,
            lr_scheduler_type="constant", weight_decay=0.0, max_steps=warmup + steps, loss_type="grpo", num_iterations=1,
            logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, bf16=False, seed=0,
            gradient_checkpointing=False,  # TRL's default is on; ours is off (params: gradient_checkpointing)
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        data = Dataset.from_dict({"prompt": [prompt] * (n_prompts * (warmup + steps))})
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                              callbacks=[Clock()])  # fmt: skip
        started = time.perf_counter()
        trainer.train()
    stamps.insert(0, started)
    n = n_prompts * G
    return [(stamps[i + 1] - stamps[i], sum(lengths[i * n : (i + 1) * n])) for i in range(warmup, warmup + steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/sft", help="a policy checkpoint (default: the pipeline's SFT model)")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step (x G = 4 completions)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.model / "policy.json").is_file():
        sys.exit(f"error: {args.model}: no policy checkpoint (run `make pipeline`, or pass --model DIR)")
    if not (TRL / "trl").is_dir():
        sys.exit(f"error: {TRL}: TRL is not installed there (make .trl/.installed)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.prompts * G
    print(f"GRPO, {args.model}: {args.prompts} prompts x G {G} = {n} completions of {TOKENS} tokens per optimizer step, "
          f"{args.threads} threads, {args.rounds} rounds of {args.steps} timed steps per side")  # fmt: skip
    ratios = []
    for beta in (0.0, 0.04):
        steps: dict[str, list[tuple[float, int]]] = {"realsr-r1": [], "TRL GRPOTrainer": []}
        for round_ in range(args.rounds):
            for name, run in (("realsr-r1", ours), ("TRL GRPOTrainer", trl)):
                timed = run(args.model, beta, args.steps, args.warmup, args.prompts)
                steps[name] += timed
                print(f"beta {beta}, round {round_ + 1}: {name} " + " ".join(f"{s:.2f}" for s, _ in timed) + " s/step", flush=True)
        rates = {}
        for name, timed in steps.items():
            rates[name] = statistics.median(tokens / seconds / TOKENS for seconds, tokens in timed)
            seconds = statistics.median(s for s, _ in timed)
            per_completion = sum(t for _, t in timed) / len(timed) / n
            print(f"beta {beta}: {name} {seconds:.2f} s/step (median), {per_completion:.0f} tokens per completion, "
                  f"{rates[name]:.2f} completions of {TOKENS} tokens/s (median)", flush=True)  # fmt: skip
        ratios.append(rates["realsr-r1"] / rates["TRL GRPOTrainer"])
    print(f"ratio realsr-r1 / TRL completions/s: beta 0 {ratios[0]:.2f}x, beta 0.04 {ratios[1]:.2f}x")


if __name__ == "__main__":
    main()
