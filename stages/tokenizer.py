"""Stage `tokenizer`: fit the image tokenizer on the train shards, train the text BPE.

Reads data/shards/{train,val} (and data/annotations/*.jsonl where the annotate stage has
written them); writes models/tokenizer/{image,text}/ and metrics/tokenizer.json with the val
reconstruction PSNR/SSIM per chain scale, the bicubic baseline and the code usage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from realsr_r1.atomic import atomic_dir, write_json
from realsr_r1.config import Params
from realsr_r1.data.shards import read_samples
from realsr_r1.tokenizers.corpus import text_corpus
from realsr_r1.tokenizers.fit import (
    evaluate_reconstruction,
    fit_image_tokenizer,
    image_tokenizer_config,
    stack_samples,
)
from realsr_r1.tokenizers.factory import save_image_tokenizer
from realsr_r1.tokenizers.text import train_text_tokenizer
from stages.common import UsageError, run_stage

SHARDS = Path("data/shards")
ANNOTATIONS = Path("data/annotations")
OUT = Path("models/tokenizer")
METRICS = Path("metrics/tokenizer.json")
log = logging.getLogger("stages.tokenizer")


def main(params: Params) -> None:
    train_samples, val_samples = list(read_samples(SHARDS / "train")), list(read_samples(SHARDS / "val"))
    if not train_samples or not val_samples:
        raise UsageError(f"{SHARDS}: need train and val shards (run the synthesize stage first)")
    train, val = stack_samples(train_samples), stack_samples(val_samples)
    config = image_tokenizer_config(params)

    start = time.perf_counter()
    image_tokenizer = fit_image_tokenizer(config, train)
    fit_seconds = time.perf_counter() - start
    log.info("image tokenizer fitted in %.1f s", fit_seconds)  # logged, not a metric: metrics stay reproducible
    metrics = evaluate_reconstruction(image_tokenizer, val)
    log.info("val final: %.2f dB (bicubic %.2f dB)", metrics["final"]["psnr"], metrics["final"]["bicubic_psnr"])

    annotation_files = sorted(ANNOTATIONS.glob("*.jsonl"))
    if not annotation_files:
        log.warning("%s: no annotations yet; the BPE learns the prompt and degradation texts only", ANNOTATIONS)
    corpus = text_corpus(annotation_files, (s.degradation["text"] for s in train_samples))
    t = params.tokenizer.text
    text_tokenizer = train_text_tokenizer(corpus, t.vocab_size, t.min_frequency, t.max_grid)

    with atomic_dir(OUT) as tmp:
        save_image_tokenizer(image_tokenizer, tmp / "image")
        text_tokenizer.save_pretrained(tmp / "text")
    write_json(
        METRICS,
        {
            "image": metrics,
            "train_samples": len(train),
            "val_samples": len(val),
            "text_vocab": len(text_tokenizer),
        },
    )


if __name__ == "__main__":
    run_stage(main)
