"""The tiny default backbone: a Llama-style decoder from `transformers` with one vocabulary
for text and image codes, and a continuous patch projector for the LR input (Janus-style
decoupled understanding input) or, optionally, the LR as image codes (Lumina-mGPT style).

Saved as a directory: `policy.json` (this config), `backbone/` (the Llama, safetensors),
`projector.safetensors`, `tokenizer/` (text), `image_tokenizer/` and `training.json` (what
trained the weights, `realsr_r1.policy.record`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from realsr_r1.policy.decoder import DecoderPolicy
from realsr_r1.policy.interface import PromptBatch
from realsr_r1.policy.layout import Layout
from realsr_r1.policy.loading import CONFIG_FILE, read_policy_config
from realsr_r1.policy.record import TrainingRecord, read_record, write_record
from realsr_r1.tokenizers.factory import load_image_tokenizer, save_image_tokenizer
from realsr_r1.tokenizers.image import ImageTokenizer, patchify
from realsr_r1.tokenizers.text import load_text_tokenizer
from realsr_r1.vlcot import (
    IMAGE_BLOCK_DOWNSCALE,
    IMAGE_BLOCKS,
)


@dataclass(frozen=True)
class TinyPolicyConfig:
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 688
    max_position: int = 1024
    dropout: float = 0.0
    lr_input: Literal["projector", "codes"] = "projector"
    lr_patch: int = 4  # projector: side of one LR patch in pixels
    code_context: Literal["none", "lr"] = "none"  # lr: each code's LR neighbourhood + grid place join its input
    gt_size: int = 64
    scale: int = 4
    seed: int = 0

    @property
    def lr_size(self) -> int:
        return self.gt_size // self.scale


class PatchProjector(nn.Module):
    """LR pixels -> one embedding per p x p patch (MLP + learned slot position)."""

    def __init__(self, patch: int, slots: int, hidden: int) -> None:
        super().__init__()
        self.patch = patch
        self.mlp = nn.Sequential(nn.Linear(3 * patch * patch, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.position = nn.Parameter(torch.zeros(slots, hidden))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        patches = patchify(lr * 2.0 - 1.0, self.patch)
        return self.mlp(patches.reshape(len(lr), -1, patches.shape[-1])) + self.position


class CodeContext(nn.Module):
    """Per image code: the LR pixels around its place and a learned embedding of that place.

    Added to the input that *predicts* the code, so a small model reads the LR under each code
    directly instead of learning where it lies through attention over text of varying length."""

    window = 8  # side of each code's LR neighbourhood, after resizing the LR to 4 px per code

    def __init__(self, grids: list[tuple[int, int]], hidden: int) -> None:
        super().__init__()
        self.grids = grids
        self.mlp = nn.Sequential(nn.Linear(3 * self.window**2, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.position = nn.Parameter(torch.zeros(sum(h * w for h, w in grids), hidden))

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) LR in [0, 1] -> (B, codes, 3 * window^2): every code's neighbourhood, in program order."""
        out = []
        for h, w in self.grids:
            x = nn.functional.interpolate(lr * 2.0 - 1.0, size=(4 * h, 4 * w), mode="bilinear", align_corners=False, antialias=True)
            x = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
            out.append(nn.functional.unfold(x, self.window, stride=4).transpose(1, 2))
        return torch.cat(out, 1)

    def forward(self, lr: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The context of code `codes[i]` for row `rows[i]`; rows past len(lr) (CFG's LR-blanked
        rows) get the place embedding alone."""
        has_lr = rows < len(lr)
        feats = self.features(lr)[rows.clamp(max=len(lr) - 1), codes]
        return self.position[codes] + self.mlp(feats) * has_lr.unsqueeze(-1).to(feats.dtype)


class TinyPolicy(DecoderPolicy):
    """Llama decoder + projector + the two tokenizers (the image tokenizer stays on the CPU)."""

    def __init__(
        self,
        config: TinyPolicyConfig,
        backbone: LlamaForCausalLM,
        text_tokenizer: PreTrainedTokenizerFast,
        image_tokenizer: ImageTokenizer,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.text_tokenizer = text_tokenizer
        self.image_tokenizer = image_tokenizer
        self.record: TrainingRecord | None = TrainingRecord()  # what trained these weights (None: unknown)
        f = image_tokenizer.factor
        for block, down in IMAGE_BLOCK_DOWNSCALE.items():
            if (config.gt_size // down) % f:
                raise ValueError(f"{block} side {config.gt_size // down} is not a multiple of the tokenizer factor {f}")
        grids = {b: (config.gt_size // d // f,) * 2 for b, d in IMAGE_BLOCK_DOWNSCALE.items()}
        slots = (config.lr_size // config.lr_patch) ** 2
        if config.lr_input == "codes":
            if image_tokenizer.config.residual:
                raise ValueError("lr_input 'codes' needs an image tokenizer with residual: false")
            image_tokenizer.check_size(config.lr_size, config.lr_size)
        elif config.lr_size % config.lr_patch:
            raise ValueError(f"LR side {config.lr_size} is not a multiple of lr_patch {config.lr_patch}")
        self.layout = Layout(text_tokenizer, image_tokenizer.codebook_size, grids, slots)
        if backbone.config.vocab_size != self.layout.vocab_size:
            raise ValueError(f"backbone vocabulary {backbone.config.vocab_size} != layout {self.layout.vocab_size}")
        self.projector = (
            PatchProjector(config.lr_patch, slots, config.hidden_size) if config.lr_input == "projector" else None
        )
        self.code_context = (
            CodeContext([grids[b] for b in IMAGE_BLOCKS], config.hidden_size) if config.code_context == "lr" else None
        )

    # ------------------------------------------------------------------------ building
    @staticmethod
    def build(
        config: TinyPolicyConfig, text_tokenizer: PreTrainedTokenizerFast, image_tokenizer: ImageTokenizer
    ) -> TinyPolicy:
        """A freshly initialised policy (seeded): the starting point SFT loads."""
        torch.manual_seed(config.seed)
        vocab = len(text_tokenizer) + image_tokenizer.codebook_size
        llama = LlamaConfig(
            vocab_size=vocab,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads,
            max_position_embeddings=config.max_position,
            attention_dropout=config.dropout,
            bos_token_id=text_tokenizer.bos_token_id,
            eos_token_id=text_tokenizer.eos_token_id,
            pad_token_id=text_tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        backbone = LlamaForCausalLM(llama)
        return TinyPolicy(config, backbone.eval(), text_tokenizer, image_tokenizer).eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
        self.backbone.save_pretrained(path / "backbone")
        if self.projector is not None:
            save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, str(path / "projector.safetensors"))
        if self.code_context is not None:
            save_file({k: v.contiguous() for k, v in self.code_context.state_dict().items()}, str(path / "code_context.safetensors"))
        self.text_tokenizer.save_pretrained(path / "tokenizer")
        save_image_tokenizer(self.image_tokenizer, path / "image_tokenizer")
        if self.record is not None:
            write_record(self.record, path)

    @staticmethod
    def from_pretrained(path: str | Path) -> TinyPolicy:
        path = Path(path)
        config = TinyPolicyConfig(**{k: v for k, v in read_policy_config(path).items() if k != "backbone"})
        backbone = LlamaForCausalLM.from_pretrained(path / "backbone")
        policy = TinyPolicy(config, backbone, load_text_tokenizer(path / "tokenizer"), load_image_tokenizer(path / "image_tokenizer"))
        if policy.projector is not None:
            policy.projector.load_state_dict(load_file(str(path / "projector.safetensors")))
        if policy.code_context is not None:
            policy.code_context.load_state_dict(load_file(str(path / "code_context.safetensors")))
        policy.record = read_record(path)
        return policy.eval()

    # -------------------------------------------------------------------------- inputs
    def embed(self, ids: torch.Tensor, lr: torch.Tensor | None, next_code: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings; LR patch slots get the projected LR pixels (none when `lr` is None);
        with `code_context`, a position whose next token is image code k (`next_code` = k >= 0,
        same shape as `ids`) gets that code's context.

        Rows with LR slots come first and `lr` has one image per such row (CFG's blanked rows,
        after them, have no slots)."""
        emb = self.backbone.get_input_embeddings()(ids)
        if self.projector is not None and lr is not None:
            slots = ids == self.layout.lr_patch
            if slots.any():
                emb = emb.clone()
                emb[slots] = emb[slots] + self.projector(lr).reshape(-1, emb.shape[-1]).to(emb.dtype)
        if self.code_context is not None and lr is not None and next_code is not None:
            at = next_code >= 0
            if at.any():
                emb = emb.clone()
                emb[at] = emb[at] + self.code_context(lr, at.nonzero()[:, 0], next_code[at]).to(emb.dtype)
        return emb

    def prompts(self, lr: list[np.ndarray]) -> PromptBatch:
        lr_t = self.lr_tensor(lr)
        codes = self.image_tokenizer.encode(lr_t) if self.config.lr_input == "codes" else None
        cond = [self.layout.prompt_ids(None if codes is None else codes[i]) for i in range(len(lr_t))]
        uncond = [self.layout.prompt_ids(None if codes is None else codes[i], unconditional=True) for i in range(len(lr_t))]
        return PromptBatch(torch.tensor(cond), torch.tensor(uncond), lr_t).to(self.device)

    # ------------------------------------------------------------------------- decoder
    @property
    def decoder(self) -> nn.Module:
        return self.backbone.model

    @property
    def decoder_config(self) -> LlamaConfig:
        return self.backbone.config

    def head(self, hidden: torch.Tensor, image_rows: torch.Tensor) -> torch.Tensor:
        """One vocabulary, one head: text ids and image codes alike."""
        return self.backbone.lm_head(hidden)

    def logits(self, ids: torch.Tensor, lr: torch.Tensor | None) -> torch.Tensor:
        """(B, T, V) logits of whole unpadded sequences (no constraints): what tests compare against."""
        return self.backbone.lm_head(self.hidden_states(ids, lr, None))


__all__ = ["TinyPolicy", "TinyPolicyConfig"]
