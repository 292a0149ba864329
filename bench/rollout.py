"""Rollout engine throughput vs `transformers`' `model.generate` on the same tiny-default model.

Generated tokens per second for G=4 samples of the full VLCoT chain (constrained: tags forced,
image blocks codes-only with exact counts), with and without the KV cache, at two sequence
lengths (the text blocks' length cap sets the length), and the peer: `model.generate` on
the same backbone, the same prompt and the same number of new tokens, sampling with the
same temperature / top-p but no constraints. Best of `--repeats` interleaved timings each
(the machine is shared). Before that ratio, the peak memory of `Policy.score` at vocabulary
65,536, completion length 2,048, batch 4 (CPU, float32, no gradients), against one chunk's
logits plus the backbone's own activations. Prints the ratio engine / generate last.

Memory method: Linux's peak resident set (VmHWM in /proc/self/status), reset to the current
RSS before each measured call (`echo 5 > /proc/self/clear_refs`); a figure is that peak minus
the RSS before the call, so it counts every byte the call touched, torch's or not.

    python bench/rollout.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from realsr_r1.config import Params
from realsr_r1.policy.interface import TEACHER_FORCING, Sampling, SequenceBatch
from realsr_r1.policy.layout import IMAGE
from realsr_r1.policy.settings import policy_config, sampling
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.corpus import text_corpus
from realsr_r1.tokenizers.fit import ChainImages, fit_image_tokenizer, image_tokenizer_config
from realsr_r1.tokenizers.image import KMeansConfig, to_tensor
from realsr_r1.tokenizers.kmeans import KMeansTokenizer
from realsr_r1.tokenizers.text import train_text_tokenizer

G = 4


def build_policy(params: Params) -> TinyPolicy:
    """The tiny default (params defaults), tokenizers fitted quickly on real photo crops."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    crops = [cv2.resize(p, (128, 128), interpolation=cv2.INTER_AREA)[y : y + 64, x : x + 64] for p in photos for y in (0, 64) for x in (0, 64)]
    hr = to_tensor(crops)
    down = lambda s: torch.nn.functional.interpolate(hr, size=s, mode="area")
    chain = ChainImages(down(16), {"rough": down(16), "middle": down(32), "final": hr})
    img_cfg = replace(image_tokenizer_config(params), kmeans=KMeansConfig(max_iter=1), codebook_size=256)
    img_cfg = replace(img_cfg, codebook_size=params.tokenizer.image.codebook_size) if len(crops) * 84 >= params.tokenizer.image.codebook_size else img_cfg
    image_tok = fit_image_tokenizer(img_cfg, chain)
    text_tok = train_text_tokenizer(text_corpus([], []), params.tokenizer.text.vocab_size, 1, params.tokenizer.text.max_grid)
    return TinyPolicy.build(policy_config(params), text_tok, image_tok), crops[0][::4, ::4].copy()


def run_engine(policy: TinyPolicy, lr: np.ndarray, s: Sampling, seed: int) -> tuple[float, int]:
    """Seconds and generated tokens for one group of G samples of the full chain."""
    prompts = policy.prompts([lr])
    start = time.perf_counter()
    out = policy.rollout(prompts, G, s, seed=seed)
    seconds = time.perf_counter() - start
    assert all(c is not None for c in out.chains), "a chain did not finish"
    return seconds, int(out.batch.completion_mask.sum())


def run_generate(policy: TinyPolicy, lr: np.ndarray, s: Sampling, new_tokens: int, seed: int) -> float:
    """Seconds for `model.generate` to sample G continuations of the same prompt, same length."""
    ids = policy.prompts([lr]).input_ids.repeat(G, 1)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        out = policy.backbone.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=s.temperature, top_p=s.top_p,
            top_k=0, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=policy.layout.pad, use_cache=True,
        )
    seconds = time.perf_counter() - start
    assert out.shape[1] - ids.shape[1] == new_tokens
    return seconds


def measure(policy: TinyPolicy, lr: np.ndarray, s: Sampling, repeats: int) -> tuple[int, float, float]:
    """Best-of-`repeats` seconds for the engine and for generate, interleaved (shared machine)."""
    t_engine, t_gen = float("inf"), float("inf")
    for r in range(repeats):
        seconds, tokens = run_engine(policy, lr, s, seed=r)
        t_engine = min(t_engine, seconds)
        t_gen = min(t_gen, run_generate(policy, lr, s, tokens // G, seed=r))
    return tokens, t_engine, t_gen


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) * 1024


def peak_bytes(fn) -> int:
    """Peak RSS above the RSS at the start while `fn()` runs (the peak is reset first)."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base


def score_memory(policy: TinyPolicy, lr: np.ndarray, vocab: int = 65_536, length: int = 2_048, batch: int = 4) -> None:
    """Peak memory of `score` with a big vocabulary: the tiny model, the codebook grown to fill it."""
    k = vocab - policy.layout.text_vocab
    codebook = torch.randn(k, policy.image_tokenizer.codebook.shape[1]) * 0.1
    image_tok = KMeansTokenizer(replace(policy.image_tokenizer.config, codebook_size=k), codebook)
    big = TinyPolicy.build(replace(policy.config, max_position=length + 256), policy.text_tokenizer, image_tok)
    prompts = big.prompts([lr] * batch)
    gen = torch.Generator().manual_seed(0)
    codes = big.layout.code_offset + torch.randint(0, k, (batch, length), generator=gen)
    kinds = torch.full((batch, length), IMAGE)  # every position sampled: the most work per position
    seq = SequenceBatch(prompts, codes, torch.ones(batch, length, dtype=torch.bool), kinds)
    ids = torch.cat([prompts.input_ids, codes], 1)
    with torch.no_grad():
        acts = peak_bytes(lambda: big.backbone.model(inputs_embeds=big.embed(ids, prompts.lr), use_cache=False))
        peak = peak_bytes(lambda: big.score(seq, TEACHER_FORCING))
    chunk = batch * big.score_chunk * vocab * 4
    full = batch * length * vocab * 4
    bound = 1.5 * chunk + acts
    mib = lambda b: b / 2**20
    print(f"score memory, vocabulary {vocab:,}, length {length:,}, batch {batch} (float32, no grad): peak {mib(peak):.0f} MiB; "
          f"bound 1.5 x one chunk's logits ({mib(chunk):.0f} MiB) + the backbone's activations ({mib(acts):.0f} MiB) = "
          f"{mib(bound):.0f} MiB: {'within' if peak <= bound else 'OVER'}; the whole logits would be {mib(full):.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = Params.model_validate({"rollout": {"max_text_tokens": 64}})  # the caps below replace it
    policy, lr = build_policy(params)
    n_params = sum(p.numel() for p in policy.parameters()) / 1e6
    print(f"tiny default: {n_params:.2f} M parameters, vocabulary {policy.layout.vocab_size}, G={G}, {args.threads} threads")
    base = sampling(params)

    rows = []
    for cap in (16, 64):
        tokens, t_engine, t_gen = measure(policy, lr, replace(base, max_text_tokens=cap), args.repeats)
        rows.append((tokens, t_engine, t_gen))
        print(f"text cap {cap:3d}: {tokens // G:4d} tokens/sample   engine (KV cache) {tokens / t_engine:7.0f} tokens/s   "
              f"model.generate (no constraints) {tokens / t_gen:7.0f} tokens/s")
    score_memory(policy, lr)
    (n1, t1, _), (n2, t2, _) = rows
    print(f"cost growth with the cache: length x{n2 / n1:.2f} -> time x{t2 / t1:.2f} (linear: about equal)")
    t_plain, n_plain = min(run_engine(policy, lr, replace(base, max_text_tokens=16, use_cache=False), seed=r) for r in range(args.repeats))
    print(f"engine without cache, text cap 16: {n_plain / t_plain:7.0f} tokens/s (the cache is x{(n1 / t1) / (n_plain / t_plain):.1f} faster)")
    ratios = [t_gen / t_engine for _, t_engine, t_gen in rows]
    print(f"ratio engine / model.generate tokens/s: {min(ratios):.2f}x (short {ratios[0]:.2f}x, long {ratios[1]:.2f}x)")


if __name__ == "__main__":
    main()
