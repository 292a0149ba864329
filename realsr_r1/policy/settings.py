"""From validated params to the library's typed configs, and the initial checkpoint built from them.

The library's only view of params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realsr_r1.atomic import atomic_dir
from realsr_r1.config import Params
from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy, TinyPolicyConfig
from realsr_r1.tokenizers.factory import load_image_tokenizer
from realsr_r1.tokenizers.text import load_text_tokenizer


def policy_config(params: Params) -> TinyPolicyConfig:
    p = params.policy.model_dump(exclude={"backbone"})
    return TinyPolicyConfig(**p, gt_size=params.prepare.gt_size, scale=params.synthesize.scale, seed=params.seed)


def sampling(params: Params, use_cache: bool = True) -> Sampling:
    r = params.rollout
    return Sampling(
        temperature=r.temperature,
        top_p=r.top_p,
        image_temperature=r.image_temperature,
        image_top_k=r.image_top_k,
        cfg=r.cfg,
        max_text_tokens=r.max_text_tokens,
        max_new_tokens=r.max_new_tokens,
        use_cache=use_cache,
    )


def resolve_device(name: str) -> torch.device:
    """`auto`: cuda when torch sees one, else cpu; `cuda` without one is one clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA device (use cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def write_initial_policy(params: Params, tokenizer_dir: str | Path, out: str | Path) -> TinyPolicy:
    """Build the untrained policy from params and the tokenizer stage's output; save it atomically.

    The checkpoint SFT starts from; shared by `realsr init-policy` and the `init_policy` stage.
    Its training record is empty, so whatever loads it can tell that it is untrained.
    """
    tokenizer_dir = Path(tokenizer_dir)
    policy = TinyPolicy.build(
        policy_config(params), load_text_tokenizer(tokenizer_dir / "text"), load_image_tokenizer(tokenizer_dir / "image")
    )
    with atomic_dir(out) as tmp:
        policy.save_pretrained(tmp)
    return policy
