"""From validated params to the library's typed configs (the library's only view of params.yaml)."""

from __future__ import annotations

from realsr_r1.config import Params
from realsr_r1.policy.interface import Sampling
from realsr_r1.policy.tiny import TinyPolicyConfig


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
