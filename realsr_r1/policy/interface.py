"""The policy interface SFT and GRPO train through, and the typed batches it speaks.

A backbone (the tiny Llama; Janus-Pro at real scale) implements `Policy`: build prompts from LR
photos, build teacher-forcing targets from chains, score completions (per-token log-probs
under the constrained, temperature-scaled distribution), roll out groups, decode images.
Training code touches nothing else, so a second backbone needs no change to SFT/GRPO.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from realsr_r1.vlcot import Completion, VLCoT


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn; log-probs follow the temperatures, not the top-p / top-k cut."""

    temperature: float = 0.9  # text tokens
    top_p: float = 0.95  # text tokens (1.0: off)
    image_temperature: float = 0.9
    image_top_k: int = 0  # image codes (0: off)
    cfg: float | None = None  # classifier-free guidance scale on image codes (the paper: 0.8); None: off
    max_text_tokens: int | None = 64  # a text block this long is closed by force (truncated); None: no cap
    max_new_tokens: int = 1024  # a sample not finished by then is cut (truncated)
    use_cache: bool = True


# What SFT scores its targets under: the model's own distribution (temperature 1, no cut, no
# guidance) and no text cap, so a long caption is trained on rather than refused.
TEACHER_FORCING = Sampling(temperature=1.0, top_p=1.0, image_temperature=1.0, image_top_k=0, cfg=None, max_text_tokens=None)


@dataclass(frozen=True)
class PromptBatch:
    """B prompts, left-padded to one length when they differ (a chat template's prompts do)."""

    input_ids: torch.Tensor  # (B, P) long
    uncond_ids: torch.Tensor  # (B, P) long: the LR blanked, for CFG
    lr: torch.Tensor  # (B, 3, h, w) float in [0, 1]
    # (B, P) bool: real prompt tokens, False on the left padding; None: no row is padded
    attention_mask: torch.Tensor | None = None
    # rows come in runs of this many copies of one prompt (`repeat`): the rollout's prefill and
    # `score` run each prompt once and share its KV cache with its run
    group_size: int = 1

    def __len__(self) -> int:
        return len(self.input_ids)

    def to(self, device: torch.device) -> PromptBatch:
        return self._map(lambda t: t.to(device), self.group_size)

    def repeat(self, group_size: int) -> PromptBatch:
        """Each prompt `group_size` times in a row (a GRPO group is contiguous)."""
        return self._map(lambda t: t.repeat_interleave(group_size, dim=0), self.group_size * group_size)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], group_size: int) -> PromptBatch:
        mask = None if self.attention_mask is None else fn(self.attention_mask)
        return PromptBatch(fn(self.input_ids), fn(self.uncond_ids), fn(self.lr), mask, group_size)


@dataclass(frozen=True)
class SequenceBatch:
    """Prompts plus right-padded completions (the unit SFT and GRPO score)."""

    prompt: PromptBatch
    completion_ids: torch.Tensor  # (B, L) long, padded with the pad id
    completion_mask: torch.Tensor  # (B, L) bool: real completion tokens (eos included)
    # (B, L) long: the slot kind of each position as the rollout saw it (layout.FORCED, IMAGE,
    # text kinds); None (SFT targets): `score` derives it by replaying the layout, which also checks it
    kinds: torch.Tensor | None = None

    def to(self, device: torch.device) -> SequenceBatch:
        kinds = None if self.kinds is None else self.kinds.to(device)
        return SequenceBatch(self.prompt.to(device), self.completion_ids.to(device), self.completion_mask.to(device), kinds)


@dataclass(frozen=True)
class TokenScores:
    """Per completion token: log-prob under the constrained distribution and the slot masks."""

    logprobs: torch.Tensor  # (B, L); 0 at forced and padded positions
    text_mask: torch.Tensor  # (B, L) bool: sampled text tokens (incl. the closing tag drawn)
    image_mask: torch.Tensor  # (B, L) bool: sampled image codes
    log_z: torch.Tensor  # (B, L) logsumexp of the raw logits (for a z-loss)

    @property
    def sampled_mask(self) -> torch.Tensor:
        return self.text_mask | self.image_mask


@dataclass(frozen=True)
class Rollout:
    """G samples per prompt: ids, log-probs under the sampling policy, masks, chains, images."""

    batch: SequenceBatch  # prompts repeated G times (rows g*... contiguous per prompt)
    group: torch.Tensor  # (N,) index of the prompt each row came from
    logprobs: torch.Tensor  # (N, L) as in `TokenScores`
    text_mask: torch.Tensor
    image_mask: torch.Tensor
    truncated: torch.Tensor  # (N,) bool: hit a length guard; scores 0 on format
    completions: list[Completion]  # text with image placeholders + decoded uint8 RGB images
    chains: list[VLCoT | None]  # parsed blocks (None where unfinished or unparsable)
    # per row, the final image under expected decoding (None where unfinished); only when the
    # rollout was asked for it (`expected_final=True`), so one rollout serves both decodings
    expected_final: list[np.ndarray | None] | None = None

    @property
    def sampled_mask(self) -> torch.Tensor:
        return self.text_mask | self.image_mask

    def __len__(self) -> int:
        return len(self.completions)


class Policy(ABC, torch.nn.Module):
    """What SFT and GRPO need of a backbone; `torch.nn.Module` for parameters and modes."""

    @abstractmethod
    def prompts(self, lr: list[np.ndarray]) -> PromptBatch:
        """Prompts for uint8 RGB LR photos of the model's LR size."""

    @abstractmethod
    def targets(self, prompts: PromptBatch, chains: list[VLCoT]) -> SequenceBatch:
        """Teacher-forcing sequences: chains with uint8 RGB images at 1/4, 1/2 and full GT size."""

    @abstractmethod
    def score(self, batch: SequenceBatch, sampling: Sampling) -> TokenScores:
        """Teacher-forced per-token log-probs (differentiable), with the rollout's constraints.

        `sampling` has no default on purpose: SFT scores under `TEACHER_FORCING`, GRPO under the
        rollout's own sampling; a silent default would train at the wrong temperature."""

    @abstractmethod
    def rollout(
        self, prompts: PromptBatch, group_size: int, sampling: Sampling, seed: int = 0, expected_final: bool = False
    ) -> Rollout:
        """G samples per prompt, batched, with the constrained decoding of the layout;
        `expected_final` also keeps each row's final image under expected decoding."""

    @abstractmethod
    def gradient_checkpointing_enable(self) -> None:
        """Recompute the decoder's activations in the backward pass (memory for time)."""

    @abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write safetensors + JSON config + tokenizers into `path`."""

    @property
    def device(self) -> torch.device:
        """Where the parameters live; every tensor the engine creates goes there too."""
        return next(self.parameters()).device

    @property
    @abstractmethod
    def lr_size(self) -> int:
        """Side of the LR photo the model reads (GT side / scale)."""

    @property
    @abstractmethod
    def scale(self) -> int:
        """Upscaling factor from the LR to the final image."""
