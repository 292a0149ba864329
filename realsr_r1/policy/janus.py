"""The real-scale backbone: Janus-Pro through `transformers`' `JanusForConditionalGeneration`.

Janus decouples seeing from drawing, and so does this policy:
- the LR photo enters through Janus' understanding path: its image processor, SigLIP-style
  vision encoder and aligner fill the `<image_placeholder>` slots of a prompt written with
  Janus' own chat template (left-padded when prompts differ in length);
- text is drawn from the language head, image codes from the generation head (with its own
  embeddings and aligner for codes fed back), switching at the layout's block tags; the layout
  knows the sequence as one id space (text ids, then `code_offset + code`), so `head` fills a
  row from the head its next token comes from, the other head's ids at -inf;
- the three chain images are grids of Janus' VQ model (16x downsampling: 96, 192 and 384 px
  for a 384 px final), decoded by its decoder, so drawn and expected decoding work as with the
  tiny tokenizer; classifier-free guidance on image codes blanks the LR.

The layout's tags and structure tokens are added to Janus' tokenizer as special tokens (the
spare rows of Janus-Pro's 102,400-row embedding hold them; a smaller model is resized). Saved
as a directory: `policy.json`, `janus/` (a complete Janus-Pro folder: weights, config, tokenizer
and processor, loadable by `transformers` alone) and `training.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from transformers import AutoProcessor, JanusForConditionalGeneration, PretrainedConfig

from realsr_r1.errors import first_line
from realsr_r1.policy.decoder import DecoderPolicy
from realsr_r1.policy.interface import PromptBatch
from realsr_r1.policy.layout import Layout
from realsr_r1.policy.loading import CONFIG_FILE, PolicyLoadError, read_policy_config
from realsr_r1.policy.record import TrainingRecord, read_record, write_record
from realsr_r1.tokenizers import text as tt
from realsr_r1.tokenizers.image import ImageTokenizerConfig, to_uint8
from realsr_r1.tokenizers.vq import VQTokenizer, vq_factor
from realsr_r1.vlcot import IMAGE_BLOCK_DOWNSCALE, IMAGE_TOKEN, PROMPT

MODEL_DIR = "janus"


@dataclass(frozen=True)
class JanusPolicyConfig:
    gt_size: int = 384  # side of the final image (a multiple of 4 x the VQ's 16)
    scale: int = 4
    decode: Literal["sample", "expected"] = "sample"  # how rollouts turn codes into images
    backbone: str = "janus"  # what `load_policy` reads to pick this class

    @property
    def lr_size(self) -> int:
        return self.gt_size // self.scale


def check_janus_folder(path: str | Path) -> Path:
    """A downloaded Janus-Pro folder (`deepseek-community/Janus-Pro-1B` layout), or one clear error."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise PolicyLoadError(f"policy.path {path}: not a Janus-Pro folder (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "janus":
        raise PolicyLoadError(f"policy.path {path}: config.json has model_type {model_type!r}, not 'janus' (a transformers Janus-Pro folder)")
    if not (path / "tokenizer_config.json").is_file():
        raise PolicyLoadError(f"policy.path {path}: no tokenizer_config.json (Janus' tokenizer belongs in the same folder)")
    if not any((path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        raise PolicyLoadError(f"policy.path {path}: no processor_config.json or preprocessor_config.json (Janus' image processor)")
    return path


class JanusPolicy(DecoderPolicy):
    """Janus-Pro with the layout; implements `Policy` and the engine's `StepModel`."""

    def __init__(self, config: JanusPolicyConfig, model: JanusForConditionalGeneration, processor: AutoProcessor) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.processor = processor
        self.text_tokenizer = processor.tokenizer
        self.record: TrainingRecord | None = TrainingRecord()
        vqmodel = model.model.vqmodel.requires_grad_(False)  # Janus' VQ stays frozen
        f = vq_factor(vqmodel)
        for block, down in IMAGE_BLOCK_DOWNSCALE.items():
            if (config.gt_size // down) % f or config.gt_size % down:
                raise ValueError(f"prepare.gt_size {config.gt_size}: the {block} side {config.gt_size // down} is not a multiple of Janus' VQ factor {f}")
        self.image_tokenizer = VQTokenizer(
            ImageTokenizerConfig(kind="vq", factor=f, codebook_size=vqmodel.config.num_embeddings, residual=False, decode=config.decode),
            vqmodel,
        )
        grids = {b: (config.gt_size // d // f,) * 2 for b, d in IMAGE_BLOCK_DOWNSCALE.items()}
        add_layout_tokens(self.text_tokenizer, max(max(g) for g in grids.values()))
        if len(self.text_tokenizer) > model.config.text_config.vocab_size:
            model.resize_token_embeddings(len(self.text_tokenizer))
        self.layout = Layout(self.text_tokenizer, self.image_tokenizer.codebook_size, grids, lr_slots=0)
        self.image_token_id = model.config.image_token_id
        self.prompt_text = chat_prompt(processor)

    # ------------------------------------------------------------------------ building
    @staticmethod
    def from_janus(path: str | Path, config: JanusPolicyConfig) -> JanusPolicy:
        """A policy from a Janus-Pro folder (pretrained, or `build_tiny_janus`'s): the start of SFT."""
        path = check_janus_folder(path)
        try:
            processor = AutoProcessor.from_pretrained(path)
            model = JanusForConditionalGeneration.from_pretrained(path)
        except (OSError, ValueError, KeyError) as err:
            raise PolicyLoadError(f"policy.path {path}: cannot load: {first_line(err)}") from None
        return JanusPolicy(config, model.eval(), processor).eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
        self.model.save_pretrained(path / MODEL_DIR)
        self.processor.save_pretrained(path / MODEL_DIR)
        if self.record is not None:
            write_record(self.record, path)

    @staticmethod
    def from_pretrained(path: str | Path) -> JanusPolicy:
        path = Path(path)
        config = JanusPolicyConfig(**read_policy_config(path))
        policy = JanusPolicy.from_janus(path / MODEL_DIR, config)
        policy.record = read_record(path)
        return policy

    # -------------------------------------------------------------------------- inputs
    def pixel_values(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) LR in [0, 1] -> Janus' vision input (its image processor: resize, pad, normalise)."""
        pixels = self.processor.image_processor(images=list(to_uint8(lr)), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, next(self.model.model.vision_model.parameters()).dtype)

    def embed(self, ids: torch.Tensor, lr: torch.Tensor | None, next_code: torch.Tensor | None = None) -> torch.Tensor:
        """Text ids through the language embeddings, image codes through the generation
        embeddings and aligner, LR slots from the vision encoder (rows with slots come first)."""
        offset = self.layout.code_offset
        is_code = ids >= offset
        emb = self.model.get_input_embeddings()(ids.masked_fill(is_code, 0))
        if is_code.any():
            codes = self.model.prepare_embeddings_for_image_generation((ids - offset).clamp(min=0))
            emb = torch.where(is_code.unsqueeze(-1), codes.to(emb.dtype), emb)
        slots = ids == self.image_token_id
        if lr is not None and slots.any():
            features = self.model.model.get_image_features(self.pixel_values(lr)).pooler_output
            emb = emb.clone()
            emb[slots] = features.reshape(-1, emb.shape[-1]).to(emb.dtype)
        return emb

    def prompts(self, lr: list[np.ndarray]) -> PromptBatch:
        lr_t = self.lr_tensor(lr)
        enc = self.processor(text=[self.prompt_text] * len(lr), images=list(lr), padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        uncond = ids.masked_fill(ids == self.image_token_id, self.text_tokenizer.pad_token_id)
        return PromptBatch(ids, uncond, lr_t, None if mask.all() else mask).to(self.device)

    # ------------------------------------------------------------------------- decoder
    @property
    def decoder(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def decoder_config(self) -> PretrainedConfig:
        return self.model.config.text_config

    def head(self, hidden: torch.Tensor, image_rows: torch.Tensor) -> torch.Tensor:
        """Text rows from the language head (its spare rows cut), image rows from the generation
        head; each row's other part is -inf, so log Z is that of the head it samples from."""
        text_vocab = self.layout.text_vocab
        out = hidden.new_full((len(hidden), self.layout.vocab_size), float("-inf"))
        text_rows = ~image_rows
        if text_rows.any():
            out[text_rows, :text_vocab] = self.model.lm_head(hidden[text_rows])[:, :text_vocab]
        if image_rows.any():
            out[image_rows, text_vocab:] = self.model.model.generation_head(hidden[image_rows]).to(out.dtype)
        return out


def add_layout_tokens(tokenizer, max_grid: int) -> None:
    """The layout's tags, structure and grid tokens as special tokens (a no-op once added)."""
    missing = [t for t in tt.special_tokens(max_grid) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)


def chat_prompt(processor) -> str:
    """The paper's prompt in Janus' chat template, the LR where the prompt names the image."""
    before, after = PROMPT.split(IMAGE_TOKEN)
    content = [{"type": "text", "text": before}, {"type": "image"}, {"type": "text", "text": after}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
