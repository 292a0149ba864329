"""Benchmark: rewards per second for a batch of 64 completions (64x64 and 256x256 final images).

No peer to compare against: prints each reward's time and share for the batch, the full
`score_batch` throughput, and checks the budget (generation < 20 ms per 64x64 image on
the offline default). Run: `PYTHONPATH=. .venv/bin/python bench/rewards.py [--threads 2] [--semantic]`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data

from realsr_r1.config import RewardParams
from realsr_r1.rewards.degradation import degradation_reward
from realsr_r1.rewards.format import format_reward
from realsr_r1.rewards.generation import generation_reward
from realsr_r1.rewards.scoring import Truth, parse_all, score_batch
from realsr_r1.rewards.understanding import PhraseEmbedder, load_embedder, understanding_reward
from realsr_r1.vlcot import VLCoT, render

BATCH = 64
GT_TEXT = "medium blur, downsample, medium noise, light compression, upsample"
PREDS = (
    GT_TEXT,
    "light blur, downsample, heavy noise, light compression, upsample",
    "heavy noise, light compression",
)
ROUGH = (
    "Two lions lying on a rock under a blue sky",
    "an automobile parked in a garage",
    "a cat with green eyes",
)
TAGS = ("lions", "rock", "sky", "clouds", "cat", "car")


def make_batch(size: int, rng: np.random.Generator) -> tuple[list, list[Truth]]:
    """64 completions over real photo crops; half the final images blurred and noised."""
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    completions, truths = [], []
    for i in range(BATCH):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        y, x = rng.integers(0, h - 256), rng.integers(0, w - 256)
        gt = cv2.resize(photo[y : y + 256, x : x + 256], (size, size), interpolation=cv2.INTER_AREA)
        final = gt
        if i % 2:
            noisy = cv2.GaussianBlur(gt, (0, 0), 1.5).astype(np.float64) + rng.normal(0, 12, gt.shape)
            final = np.clip(noisy, 0, 255).round().astype(np.uint8)
        chain = VLCoT(
            degradation=PREDS[i % 3],
            rough_understand=ROUGH[i % 3],
            middle_understand="a photo",
            final_understand="a detailed photo",
            rough_image=cv2.resize(gt, (size // 4, size // 4), interpolation=cv2.INTER_AREA),
            middle_image=cv2.resize(gt, (size // 2, size // 2), interpolation=cv2.INTER_AREA),
            final_image=final,
        )
        completions.append(render(chain))
        truths.append(Truth.from_text(GT_TEXT, TAGS, gt))
    return completions, truths


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best-of-`repeats` wall time and process CPU time in seconds (after one warm-up call).

    CPU time (all threads of this process) is the robust figure on a shared machine: other
    users' load stretches wall time but not the work this process does.
    """
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu


def bench_size(
    size: int, rng: np.random.Generator, params: RewardParams, embedder: PhraseEmbedder | None, repeats: int
) -> None:
    """Time each reward and the full `score_batch` on 64 completions with `size` x `size` final images."""
    gen = params.generation
    completions, truths = make_batch(size, rng)
    chains, _ = parse_all(completions)
    gts, tags = [t.gt for t in truths], [t.tags for t in truths]
    parts: dict[str, Callable[[], object]] = {
        "parse": lambda: parse_all(completions),
        "format": lambda: format_reward(chains, [g.shape[:2] for g in gts]),
        "degradation": lambda: degradation_reward(chains, [t.degradation for t in truths]),
        "understanding": lambda: understanding_reward(chains, tags),
        "generation": lambda: generation_reward(chains, gts, gen),
    }
    if embedder is not None:
        # a fresh phrase cache each call: the worst case (no phrase seen before)
        def semantic() -> object:
            embedder.clear()
            return understanding_reward(chains, tags, "semantic", embedder=embedder)

        parts["understanding(semantic)"] = semantic
    times = {name: timed(fn, repeats) for name, fn in parts.items()}
    wall, cpu = timed(lambda: score_batch(completions, truths, params), repeats)
    core = sum(c for k, (_, c) in times.items() if k != "understanding(semantic)")
    print(
        f"\n{size}x{size} final images, score_batch: wall {wall * 1e3:.1f} ms = {BATCH / wall:.0f} completions/s, "
        f"CPU {cpu * 1e3:.1f} ms"
    )
    print(f"  {'reward':<24} {'wall ms':>9} {'CPU ms':>9} {'per s (wall)':>13} {'CPU share':>10}")
    for name, (w, c) in times.items():
        share = f"{100 * c / core:9.1f}%" if name != "understanding(semantic)" else "     (opt)"
        print(f"  {name:<24} {w * 1e3:9.2f} {c * 1e3:9.2f} {BATCH / w:13.0f} {share}")
    per_wall, per_cpu = (t / BATCH * 1e3 for t in times["generation"])
    # CPU time bounds the wall time on idle cores from above (threads only add parallelism)
    print(f"  generation per image: wall {per_wall:.2f} ms, CPU {per_cpu:.2f} ms")
    if size == 64:
        verdict = "OK" if per_cpu < 20 else "OVER BUDGET"
        print(
            f"  budget: generation < 20 ms per 64x64 image (offline default), judged on CPU time: {verdict}"
        )
    scores = generation_reward(chains, gts, gen)
    print(f"  generation reward: clean {scores[0::2].mean():.3f} vs blurred+noised {scores[1::2].mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--semantic", action="store_true", help="also time the semantic understanding mode")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = RewardParams()
    rng = np.random.default_rng(0)
    embedder = load_embedder() if args.semantic else None
    load = os.getloadavg()[0]
    print(
        f"batch {BATCH} completions, torch threads {torch.get_num_threads()}, best of {args.repeats}, "
        f"{os.cpu_count()} cores, load average {load:.2f} (timings are only comparable on an idle machine)"
    )
    for size in (64, 256):
        bench_size(size, rng, params, embedder, args.repeats)


if __name__ == "__main__":
    main()
