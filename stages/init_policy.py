"""Stage `init_policy`: the untrained policy built from params, the checkpoint SFT starts from.

tiny_llama reads models/tokenizer/{image,text}; janus reads the Janus-Pro folder `policy.path`
and the chains' text blocks (data/annotations, the train shards' degradation texts) to record
its tokenizer's longest block. Writes models/policy_init (safetensors + config + tokenizers).
"""

from __future__ import annotations

import logging
from pathlib import Path

from realsr_r1.config import Params
from realsr_r1.data.shards import read_records
from realsr_r1.policy.settings import write_initial_policy
from realsr_r1.tokenizers.corpus import block_texts
from stages.common import run_stage

TOKENIZER = Path("models/tokenizer")
ANNOTATIONS = Path("data/annotations")
SHARDS = Path("data/shards")
OUT = Path("models/policy_init")
log = logging.getLogger("stages.init_policy")


def main(params: Params) -> None:
    texts = []
    if params.policy.backbone == "janus":  # the tiny BPE measured its own longest block in the tokenizer stage
        texts = block_texts(sorted(ANNOTATIONS.glob("*.jsonl")), (r["text"] for r in read_records(SHARDS / "train")))
    policy = write_initial_policy(params, TOKENIZER, OUT, texts)
    n = sum(p.numel() for p in policy.parameters())
    log.info("wrote %s (%.2f M parameters, vocabulary %d)", OUT, n / 1e6, policy.layout.vocab_size)


if __name__ == "__main__":
    run_stage(main)
