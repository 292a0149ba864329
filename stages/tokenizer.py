"""Stage `tokenizer`: fit the image tokenizer on the train shards, train the text BPE.

Both splits are streamed in batches (k-means keeps only its subsample of patches), so memory
does not grow with the number of samples.

Reads data/shards/{train,val} (and data/annotations/*.jsonl where the annotate stage has
written them); writes models/tokenizer/{image,text}/ and metrics/tokenizer.json with the
reconstruction PSNR/SSIM-Y per chain scale on the `val_samples` val set every stage scores, the
bicubic baseline, the code usage and the longest text block in tokens (also saved in the text
tokenizer's config, for the rollout's text cap).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.data.shards import evenly_spaced, read_records, read_samples
from realsr_r1.tokenizers.corpus import block_texts, text_corpus
from realsr_r1.tokenizers.factory import save_image_tokenizer
from realsr_r1.tokenizers.fit import (
    ChainImages,
    chain_batches,
    evaluate_reconstruction,
    fit_image_tokenizer_stream,
    image_tokenizer_config,
)
from realsr_r1.tokenizers.text import record_longest_block, train_text_tokenizer
from stages.common import UsageError, run_stage

SHARDS = Path("data/shards")
ANNOTATIONS = Path("data/annotations")
OUT = Path("models/tokenizer")
METRICS = Path("metrics/tokenizer.json")
BATCH = 256  # samples decoded at a time: the split is streamed, never held whole
log = logging.getLogger("stages.tokenizer")


def main(params: Params) -> None:
    counts = {split: sum(1 for _ in read_records(SHARDS / split)) for split in ("train", "val")}
    if not counts["train"] or not counts["val"]:
        raise UsageError(f"{SHARDS}: need train and val shards (run the synthesize stage first)")
    config = image_tokenizer_config(params)

    def chains(split: str) -> Iterator[ChainImages]:
        return chain_batches(tqdm(read_samples(SHARDS / split), desc=f"tokenizer {split}", total=counts[split],
                                  unit="sample", mininterval=1), BATCH)

    start = time.perf_counter()
    image_tokenizer = fit_image_tokenizer_stream(config, lambda: chains("train"), counts["train"])
    fit_seconds = time.perf_counter() - start
    log.info("image tokenizer fitted in %.1f s", fit_seconds)  # logged, not a metric: metrics stay reproducible
    scored = set(evenly_spaced(range(counts["val"]), params.val_samples))  # the val set every stage scores
    val = (s for i, s in enumerate(read_samples(SHARDS / "val")) if i in scored)
    metrics = evaluate_reconstruction(image_tokenizer, chain_batches(val, BATCH))
    log.info("val final: %.2f dB (bicubic %.2f dB)", metrics["final"]["psnr"], metrics["final"]["bicubic_psnr"])

    annotation_files = sorted(ANNOTATIONS.glob("*.jsonl"))
    if not annotation_files:
        log.warning("%s: no annotations yet; the BPE learns the prompt and degradation texts only", ANNOTATIONS)
    degradation_texts = [r["text"] for r in read_records(SHARDS / "train")]
    corpus = text_corpus(annotation_files, degradation_texts)
    t = params.tokenizer.text
    text_tokenizer = train_text_tokenizer(corpus, t.vocab_size, t.min_frequency, t.max_grid)
    # saved with the tokenizer: `rollout.max_text_tokens: auto` caps text blocks just above it
    longest = record_longest_block(text_tokenizer, block_texts(annotation_files, degradation_texts))
    log.info("longest text block: %d tokens", longest)

    with atomic_dir(OUT) as tmp:
        save_image_tokenizer(image_tokenizer, tmp / "image")
        text_tokenizer.save_pretrained(tmp / "text")
    write_json(
        METRICS,
        {
            "image": metrics,
            "train_samples": counts["train"],
            "val_samples": counts["val"],
            "text_vocab": len(text_tokenizer),
            "longest_text_block": longest,
        },
    )


if __name__ == "__main__":
    run_stage(main)
