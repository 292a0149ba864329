"""Janus-Pro-1B-sized training on one GPU: SFT tokens/s, peak memory, GRPO seconds per step and
the rollout's share of it, to run once on a GPU; its figures belong in docs/performance.md.

A random-init `JanusForConditionalGeneration` with Janus-Pro-1B's architecture (24 layers,
hidden 2048, the 102,400-row vocabulary, the 24-layer vision tower at 384 px, the 16,384-code
VQ; about 2.1 B parameters) is built in memory, no download, and trained through the project's
own code: `JanusPolicy`, the plain backend with bf16 autocast over fp32 weights and AdamW,
gradient checkpointing, `sft_loss` on teacher-forced chains and GRPO's `collect` + `update`
(G = 4, one prompt per step, the final image's NIQE as the reward). Chains come from the bundled
photos (384 px GT crops, their bicubic 96 px LR, fixed captions); a random model never closes
its texts, so every text block runs to `--text-cap` tokens, the rollout's worst case.

    python bench/janus_gpu.py                 # on a GPU: 20 SFT steps, 5 GRPO steps
    python bench/janus_gpu.py --tiny          # the same code on the tiny Janus, on the CPU (a smoke test)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
)

from realsr_r1.policy.interface import TEACHER_FORCING, Sampling
from realsr_r1.policy.janus import JanusPolicy, JanusPolicyConfig
from realsr_r1.policy.janus_tiny import CHAT_TEMPLATE, IMAGE, bundled_texts, tiny_config, tiny_tokenizer
from realsr_r1.rewards.niqe import niqe
from realsr_r1.rewards.scoring import RewardBatch
from realsr_r1.tokenizers.image import to_tensor, to_uint8
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.grpo import GrpoConfig, collect, update
from realsr_r1.train.sft import batch_tokens, sft_loss
from realsr_r1.vlcot import VLCoT

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def janus_pro_1b_config(tokenizer) -> JanusConfig:
    """Janus-Pro-1B's architecture (the values of its published config) around our tokenizer."""
    text = LlamaConfig(
        vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=16384, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = JanusVisionConfig(image_size=384, patch_size=16, projection_dim=2048, num_image_tokens=576)
    vq = JanusVQVAEConfig(num_embeddings=16384, projection_dim=2048, image_token_embed_dim=2048)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE))


def build(tiny: bool, device: torch.device) -> JanusPolicy:
    tokenizer = tiny_tokenizer(bundled_texts())
    config = tiny_config(tokenizer) if tiny else janus_pro_1b_config(tokenizer)
    size = config.vision_config.image_size
    with torch.device(device):
        model = JanusForConditionalGeneration(config)
    processor = JanusProcessor(
        image_processor=JanusImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=config.vision_config.num_image_tokens,
    )  # fmt: skip
    gt = 64 if tiny else 384
    return JanusPolicy(JanusPolicyConfig(gt_size=gt, scale=4), model, processor).to(device)


def chains(gt: int, n: int) -> tuple[list[np.ndarray], list[VLCoT]]:
    """n (LR, chain) pairs: GT crops of the bundled photos, their bicubic LR and halvings."""
    lrs, out = [], []
    for i in range(n):
        photo = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        side = min(photo.shape[:2])
        x = to_tensor(photo[:side, :side])
        hr = F.interpolate(x, size=(gt, gt), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        sizes = {"lr": gt // 4, "rough": gt // 4, "middle": gt // 2}
        small = {k: to_uint8(F.interpolate(hr, size=(s, s), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1))[0] for k, s in sizes.items()}
        lrs.append(small["lr"])
        out.append(VLCoT("medium blur, downsample, heavy noise, light compression", "a photo", "a photo with details",
                         "a detailed photo of the scene", small["rough"], small["middle"], to_uint8(hr)[0]))  # fmt: skip
    return lrs, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny Janus (CPU smoke test)")
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--grpo-steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="SFT samples per step (the paper: 2 per GPU)")
    ap.add_argument("--text-cap", type=int, default=32, help="rollout.max_text_tokens")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = "bf16" if device.type == "cuda" else "fp32"
    started = time.perf_counter()
    policy = build(args.tiny, device)
    n_params = sum(p.numel() for p in policy.parameters())
    print(f"model: {n_params / 1e6:,.0f} M parameters on {device} ({precision}), built in {time.perf_counter() - started:.0f} s")
    policy.gradient_checkpointing_enable()
    gt = policy.config.gt_size
    lrs, targets = chains(gt, max(args.batch, 6))

    # ---- SFT
    backend = build_backend("plain", policy, OptimConfig(lr=2e-5, weight_decay=0.1, total_steps=args.sft_steps, precision=precision), device=device)
    policy.train()
    tokens, seconds = 0, 0.0
    for step in range(args.sft_steps):
        pick = [(step * args.batch + j) % len(targets) for j in range(args.batch)]
        batch = policy.targets(policy.prompts([lrs[i] for i in pick]), [targets[i] for i in pick])
        sync(device)
        t = time.perf_counter()
        with backend.autocast():
            loss, _ = sft_loss(policy.score(batch, TEACHER_FORCING), 1.0, 1.0, 1e-5)
        backend.backward(loss)
        backend.step()
        sync(device)
        if step:  # the first step allocates and warms up
            tokens, seconds = tokens + batch_tokens(batch), seconds + time.perf_counter() - t
    peak_sft = peak(device)
    print(f"SFT: {tokens / max(seconds, 1e-9):,.0f} tokens/s over {args.sft_steps - 1} steps of {args.batch} chains "
          f"({batch_tokens(batch) // args.batch} tokens each), last loss {float(loss.detach()):.3f}, peak memory {peak_sft}")  # fmt: skip

    # ---- GRPO
    sampling = Sampling(temperature=0.9, top_p=0.95, image_temperature=0.9, max_text_tokens=args.text_cap, max_new_tokens=8192)
    cfg = GrpoConfig(steps=args.grpo_steps, prompts=1, group_size=4)

    class Prompt:
        def __init__(self, lr: np.ndarray) -> None:
            self.lr = lr

    def reward(rollout, samples) -> RewardBatch:  # the final image's NIQE, lower is better; 0 for an unfinished one
        finals = [c.images[2] if len(c.images) == 3 else None for c in rollout.completions]
        scores = np.zeros(len(finals))
        done = [i for i, f in enumerate(finals) if f is not None]
        if done:
            scores[done] = -niqe(to_tensor([finals[i] for i in done])).numpy()
        return RewardBatch(rewards={"niqe": scores}, total=scores, non_finite={})

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    backend = build_backend("plain", policy, OptimConfig(lr=2e-6, weight_decay=0.0, total_steps=args.grpo_steps, precision=precision), device=device)
    step_s, rollout_s, lengths = [], [], []
    for step in range(args.grpo_steps):
        sync(device)
        t = time.perf_counter()
        with backend.autocast():
            experience, timing = collect(policy, [Prompt(lrs[step % len(lrs)])], cfg, sampling, reward, None, seed=step)
        update(policy, backend, experience, cfg, sampling)
        sync(device)
        step_s.append(time.perf_counter() - t)
        rollout_s.append(timing["rollout_s"])
        lengths.append(float(experience.rollout.batch.completion_mask.sum(1).float().mean()))
    share = sum(rollout_s[1:]) / max(sum(step_s[1:]), 1e-9)
    print(f"GRPO: {np.mean(step_s[1:]):.1f} s per step (G = 4, {np.mean(lengths):.0f}-token completions), "
          f"rollout {100 * share:.0f} % of it, peak memory {peak(device)}")  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else "n/a on the CPU"


if __name__ == "__main__":
    main()
