"""Training-time switches of a model that its saved config does not carry."""

from __future__ import annotations

import torch


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout of `model` to `p`: `nn.Dropout` modules and the attention dropout
    `transformers` keeps as a float on its attention modules (active only in train mode)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
