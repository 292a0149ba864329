"""SFT training throughput: this project's engine vs `transformers.Trainer` on the same work.

CPU (default): the tiny policy of `models/policy_init` on the real SFT batches of
`data/shards/train` + `data/annotations/train.jsonl` (the pipeline's outputs, `sft.batch_size`
samples per batch). Both sides train the same policy copy for the same steps on the same
pre-built teacher-forcing batches with the same loss (`sft_loss`), AdamW, warm-up + cosine
schedule and clipping: ours through the plain backend (`Backend` protocol), theirs through
`Trainer.train()` (model wrapper returning that loss). Tokens are those the forward pass reads
(prompt + completion); the first `--warmup` steps are not timed. Best of `--repeats`
interleaved timings (the machine is shared). Prints the ratio engine / Trainer last.

    python bench/sft.py [--steps 12] [--threads 2] [--repeats 2]

`--gpu` (needs CUDA): a ~1.1B-parameter Llama (TinyLlama's shape) in bf16 autocast, sequence
2048, random tokens, a few hundred steps through the same plain backend; prints tokens/s and
model FLOPs utilisation (6 N + attention FLOPs per token over the GPU's dense bf16 peak).

    python bench/sft.py --gpu [--gpu-steps 300] [--gpu-batch 8] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import time
from copy import deepcopy
from pathlib import Path

import torch

from realsr_r1.config import Params, load_params
from realsr_r1.policy.interface import TEACHER_FORCING, Policy, SequenceBatch
from realsr_r1.policy.loading import load_policy
from realsr_r1.train.backend import OptimConfig, build_backend
from realsr_r1.train.data import ShardStream, load_annotations, shard_keys, shard_urls
from realsr_r1.train.sft import batch_tokens, sft_loss, teacher_batch


def sft_batches(params: Params, policy: Policy, shards: str, annotations: Path, n: int) -> list[SequenceBatch]:
    """`n` teacher-forcing batches of `sft.batch_size` real samples (cycling over the split)."""
    urls = shard_urls(shards, "train")
    notes = load_annotations(annotations / "train.jsonl", shard_keys(urls))
    samples = list(ShardStream(urls, notes, 1, params.sft.seed, shuffle=False))
    size = params.sft.batch_size
    return [teacher_batch(policy, [samples[(i * size + j) % len(samples)] for j in range(size)]) for i in range(n)]


def optim_config(params: Params, steps: int) -> OptimConfig:
    p = params.sft
    return OptimConfig(lr=p.lr, weight_decay=p.weight_decay, grad_clip=p.grad_clip, warmup_steps=min(p.warmup_steps, steps // 2),
                       total_steps=steps, schedule="cosine", min_lr_ratio=p.min_lr_ratio)  # fmt: skip


def loss_of(policy: Policy, batch: SequenceBatch, params: Params) -> torch.Tensor:
    p = params.sft
    return sft_loss(policy.score(batch, TEACHER_FORCING), p.text_weight, p.image_weight, p.z_loss)[0]


def engine_rate(policy: Policy, batches: list[SequenceBatch], params: Params, warmup: int) -> float:
    """Tokens/s of the project's loop body through the plain backend."""
    backend = build_backend("plain", policy, optim_config(params, len(batches)), device=torch.device("cpu"))
    policy.train()
    tokens, start = 0, 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            tokens, start = 0, time.perf_counter()
        with backend.autocast():
            loss = loss_of(policy, batch, params)
        backend.backward(loss)
        backend.step()
        tokens += batch_tokens(batch)
    return tokens / (time.perf_counter() - start)


def trainer_rate(policy: Policy, batches: list[SequenceBatch], params: Params, warmup: int, out: Path) -> float:
    """Tokens/s of `transformers.Trainer` on the same batches, loss and optimizer settings."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
            return {"loss": loss_of(self.policy, batch, params)}

    class Clock(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(batches)

        def __getitem__(self, i: int) -> SequenceBatch:
            return batches[i]

    o = optim_config(params, len(batches))
    args = TrainingArguments(
        output_dir=str(out), max_steps=len(batches), per_device_train_batch_size=1, learning_rate=o.lr,
        weight_decay=o.weight_decay, adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps,
        max_grad_norm=o.grad_clip or 0.0, warmup_steps=o.warmup_steps, lr_scheduler_type="cosine", optim="adamw_torch",
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, seed=params.sft.seed,
    )  # fmt: skip
    clock = Clock()
    clock.times = []
    trainer = Trainer(model=Wrapped(), args=args, train_dataset=Batches(), data_collator=lambda rows: {"batch": rows[0]},
                      callbacks=[clock])  # fmt: skip
    trainer.train()
    tokens = sum(batch_tokens(b) for b in batches[warmup:])
    return tokens / (clock.times[-1] - clock.times[warmup - 1])


def cpu_bench(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    base = load_policy(args.init, "cpu")
    batches = sft_batches(params, base, args.shards, args.annotations, args.steps)
    tokens = sum(batch_tokens(b) for b in batches) / len(batches)
    print(f"tiny policy {sum(p.numel() for p in base.parameters()) / 1e6:.2f} M params, batch {params.sft.batch_size}, "
          f"{tokens:.0f} tokens per batch, {args.steps} steps ({args.warmup} untimed), {args.threads} threads")  # fmt: skip
    ours, theirs = [], []
    for r in range(args.repeats):
        ours.append(engine_rate(deepcopy(base), batches, params, args.warmup))
        theirs.append(trainer_rate(deepcopy(base), batches, params, args.warmup, args.out))
        print(f"repeat {r + 1}: engine {ours[-1]:,.0f} tokens/s, Trainer {theirs[-1]:,.0f} tokens/s")
    print(f"engine (plain backend) {max(ours):,.0f} tokens/s; transformers.Trainer {max(theirs):,.0f} tokens/s")
    print(f"ratio engine / Trainer: {max(ours) / max(theirs):.2f}x")


def gpu_bench(args: argparse.Namespace) -> None:
    """~1.1B Llama, bf16 autocast, through the plain backend: tokens/s and MFU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, max_position_embeddings=args.gpu_seq, attn_implementation="sdpa")  # fmt: skip
    device = torch.device("cuda")
    model = LlamaForCausalLM(cfg).to(device)
    n = sum(p.numel() for p in model.parameters())
    optim = OptimConfig(lr=3e-4, weight_decay=0.1, warmup_steps=20, total_steps=args.gpu_steps, schedule="cosine", precision="bf16")
    backend = build_backend("plain", model, optim, device=device)
    flops_per_token = 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.gpu_seq
    gen = torch.Generator(device=device).manual_seed(0)
    warm = min(10, args.gpu_steps // 4)
    for step in range(args.gpu_steps):
        if step == warm:
            torch.cuda.synchronize()
            start = time.perf_counter()
        ids = torch.randint(0, cfg.vocab_size, (args.gpu_batch, args.gpu_seq), device=device, generator=gen)
        with backend.autocast():
            loss = model(input_ids=ids, labels=ids).loss
        backend.backward(loss)
        backend.step()
    torch.cuda.synchronize()
    rate = (args.gpu_steps - warm) * args.gpu_batch * args.gpu_seq / (time.perf_counter() - start)
    mfu = rate * flops_per_token / (args.peak_tflops * 1e12)
    print(f"Llama {n / 1e9:.2f} B params, bf16, batch {args.gpu_batch} x {args.gpu_seq}, {torch.cuda.get_device_name()}")
    print(f"{rate:,.0f} tokens/s; MFU {100 * mfu:.1f} % of {args.peak_tflops:.0f} TFLOPS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--init", type=Path, default=Path("models/policy_init"))
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--annotations", type=Path, default=Path("data/annotations"))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(".cache/bench_sft"))
    ap.add_argument("--gpu", action="store_true", help="the ~1B bf16 MFU run instead (CUDA only)")
    ap.add_argument("--gpu-steps", type=int, default=300)
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-seq", type=int, default=2048)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    args = ap.parse_args()
    gpu_bench(args) if args.gpu else cpu_bench(args)


if __name__ == "__main__":
    main()
