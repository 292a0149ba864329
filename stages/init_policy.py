"""Stage `init_policy`: the untrained policy built from params, the checkpoint SFT starts from.

Reads models/tokenizer/{image,text}; writes models/policy_init (safetensors + config + tokenizers).
"""

from __future__ import annotations

import logging
from pathlib import Path

from realsr_r1.atomic import atomic_dir
from realsr_r1.config import Params
from realsr_r1.policy.settings import policy_config
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.tokenizers.image import load_image_tokenizer
from realsr_r1.tokenizers.text import load_text_tokenizer
from stages.common import run_stage

TOKENIZER = Path("models/tokenizer")
OUT = Path("models/policy_init")
log = logging.getLogger("stages.init_policy")


def main(params: Params) -> None:
    policy = TinyPolicy.build(
        policy_config(params), load_text_tokenizer(TOKENIZER / "text"), load_image_tokenizer(TOKENIZER / "image")
    )
    with atomic_dir(OUT) as tmp:
        policy.save_pretrained(tmp)
    n = sum(p.numel() for p in policy.parameters())
    log.info("wrote %s (%.2f M parameters, vocabulary %d)", OUT, n / 1e6, policy.layout.vocab_size)


if __name__ == "__main__":
    run_stage(main)
