"""From validated params to the library's typed configs, and the initial checkpoint built from them.

The library's only view of params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realsr_r1.atomic import atomic_dir
from realsr_r1.config import Params
from realsr_r1.policy.decoder import DecoderPolicy
from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicy, TinyPolicyConfig
from realsr_r1.tokenizers.factory import load_image_tokenizer
from realsr_r1.tokenizers.text import load_text_tokenizer, longest_block, record_longest_block


def policy_config(params: Params) -> TinyPolicyConfig:
    p = params.policy.model_dump(exclude={"backbone", "path"})
    return TinyPolicyConfig(**p, gt_size=params.prepare.gt_size, scale=params.synthesize.scale, seed=params.seed)


def max_text_tokens(params: Params, policy: DecoderPolicy | None) -> int:
    """`rollout.max_text_tokens`, with `auto` resolved from the longest block the policy's tokenizer recorded."""
    r = params.rollout
    if r.max_text_tokens != "auto":
        return r.max_text_tokens
    longest = None if policy is None else longest_block(policy.text_tokenizer)
    if longest is None:
        raise ValueError(
            "rollout.max_text_tokens: auto needs the longest text block recorded by the tokenizer stage, and this "
            "policy's tokenizer has none (re-run `dvc repro tokenizer init_policy`, or set a number)"
        )
    return longest + r.text_margin


def sampling(params: Params, policy: DecoderPolicy | None = None, use_cache: bool = True) -> Sampling:
    """The rollout settings of params; `policy` resolves `max_text_tokens: auto`."""
    r = params.rollout
    return Sampling(
        temperature=r.temperature,
        top_p=r.top_p,
        image_temperature=r.image_temperature,
        image_top_k=r.image_top_k,
        cfg=r.cfg,
        max_text_tokens=max_text_tokens(params, policy),
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


def write_initial_policy(params: Params, tokenizer_dir: str | Path, out: str | Path, block_texts: list[str] = ()) -> DecoderPolicy:
    """Build the untrained policy from params and save it atomically: the checkpoint SFT starts from.

    tiny_llama: built from the `policy` keys and the tokenizer stage's output. janus: Janus-Pro
    from `policy.path`, its tokenizer measuring the longest of `block_texts` (for
    `rollout.max_text_tokens: auto`, as the tokenizer stage does for the tiny BPE). Shared by
    `realsr init-policy` and the `init_policy` stage. Its training record is empty, so whatever
    loads it can tell that it is untrained.
    """
    tokenizer_dir = Path(tokenizer_dir)
    if params.policy.backbone == "janus":
        from realsr_r1.policy.janus import JanusPolicy, JanusPolicyConfig

        config = JanusPolicyConfig(gt_size=params.prepare.gt_size, scale=params.synthesize.scale, decode=params.tokenizer.image.decode)
        policy: DecoderPolicy = JanusPolicy.from_janus(params.policy.path, config)
        if block_texts:  # else `max_text_tokens: auto` says that nothing was recorded
            record_longest_block(policy.text_tokenizer, block_texts)
    else:
        policy = TinyPolicy.build(
            policy_config(params), load_text_tokenizer(tokenizer_dir / "text"), load_image_tokenizer(tokenizer_dir / "image")
        )
    with atomic_dir(out) as tmp:
        policy.save_pretrained(tmp)
    return policy
