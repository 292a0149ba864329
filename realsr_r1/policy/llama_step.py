"""A Llama decoder's one-token cached step for the rollout engine.

A rollout calls the decoder once per token, hundreds of times, at one token per row. On a small
model `LlamaModel.forward` then spends more time around its kernels than in them: building the
causal mask, merging config defaults, routing kwargs through decorators and the attention
dispatcher. This step runs the same weights through the same operations in the same order, with
the same attention function, so its hidden states equal `LlamaModel.forward`'s bit for bit in
float32 (tests/test_llama_step.py); it leaves out only that machinery. Both backbones' decoders
are `LlamaModel`s (Janus-Pro's language model is one); any other decoder keeps `transformers`'
forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaMLP,
    LlamaModel,
    LlamaRMSNorm,
    apply_rotary_pos_emb,
)


def supports(decoder: nn.Module) -> bool:
    """A stock `LlamaModel` (no subclass, stock layers, norms and MLPs) on SDPA attention: what
    `step` reproduces exactly. (Flash and flex attention take their masks in other forms, and
    eager is no registered function; those keep the model's own forward.)"""
    return (
        type(decoder) is LlamaModel
        and decoder.config._attn_implementation == "sdpa"
        and type(decoder.norm) is LlamaRMSNorm
        and all(
            type(layer) is LlamaDecoderLayer
            and type(layer.mlp) is LlamaMLP
            and type(layer.input_layernorm) is LlamaRMSNorm
            and type(layer.post_attention_layernorm) is LlamaRMSNorm
            for layer in decoder.layers
        )
    )


def step(decoder: LlamaModel, x: torch.Tensor, position: torch.Tensor, cache: Cache, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, 1, H) input embeddings of one token per row at `position` (B,) -> (B, 1, H) final
    hidden states, filling every layer's `cache`. `mask` (B, L) bool covers the cached and the fed
    position (False on left padding); None: no row is padded."""
    cos, sin = decoder.rotary_emb(x, position[:, None])
    # what `create_causal_mask` gives one query: the padding mask itself (the causal part is all True)
    attention_mask = None if mask is None else mask[:, None, None, :]
    attend = ALL_ATTENTION_FUNCTIONS[decoder.config._attn_implementation]
    b = len(x)
    for index, layer in enumerate(decoder.layers[: decoder.config.num_hidden_layers]):
        attn, mlp = layer.self_attn, layer.mlp
        h = rms_norm(layer.input_layernorm, x)
        q, k, v = (linear(proj, h).view(b, 1, -1, attn.head_dim).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = cache.update(k, v, index)
        out, _ = attend(attn, q, k, v, attention_mask, dropout=attn.attention_dropout if attn.training else 0.0, scaling=attn.scaling)
        x = x + linear(attn.o_proj, out.reshape(b, 1, -1).contiguous())
        h = rms_norm(layer.post_attention_layernorm, x)
        x = x + linear(mlp.down_proj, mlp.act_fn(linear(mlp.gate_proj, h)) * linear(mlp.up_proj, h))
    return rms_norm(decoder.norm, x)


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` without the module call: what `nn.Linear.forward` runs."""
    return F.linear(x, module.weight, module.bias)


def rms_norm(norm: LlamaRMSNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)` in one call; bit-equal to `LlamaRMSNorm.forward` in float32, within one rounding
    step in bf16 (tested): far below what bf16 leaves between a cached step and a teacher-forced pass."""
    return F.rms_norm(x, x.shape[-1:], norm.weight, norm.variance_epsilon)
