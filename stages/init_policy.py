"""Stage `init_policy`: the untrained policy built from params, the checkpoint SFT starts from.

Reads models/tokenizer/{image,text}; writes models/policy_init (safetensors + config + tokenizers).
"""

from __future__ import annotations

import logging
from pathlib import Path

from realsr_r1.config import Params
from realsr_r1.policy.settings import write_initial_policy
from stages.common import run_stage

TOKENIZER = Path("models/tokenizer")
OUT = Path("models/policy_init")
log = logging.getLogger("stages.init_policy")


def main(params: Params) -> None:
    policy = write_initial_policy(params, TOKENIZER, OUT)
    n = sum(p.numel() for p in policy.parameters())
    log.info("wrote %s (%.2f M parameters, vocabulary %d)", OUT, n / 1e6, policy.layout.vocab_size)


if __name__ == "__main__":
    run_stage(main)
