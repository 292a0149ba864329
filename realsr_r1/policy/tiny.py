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
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, StaticCache

from realsr_r1.policy import rollout as engine
from realsr_r1.policy.interface import Policy, PromptBatch, Rollout, Sampling, SequenceBatch, TokenScores
from realsr_r1.policy.layout import FORCED, IMAGE, Layout
from realsr_r1.policy.record import TrainingRecord, read_record, write_record
from realsr_r1.tokenizers.factory import load_image_tokenizer, save_image_tokenizer
from realsr_r1.tokenizers.image import ImageTokenizer, patchify, to_tensor, to_uint8
from realsr_r1.tokenizers.text import load_text_tokenizer
from realsr_r1.vlcot import (
    IMAGE_BLOCK_DOWNSCALE,
    IMAGE_BLOCKS,
    TEXT_BLOCKS,
    Completion,
    VLCoT,
    VLCoTFormatError,
    parse,
)

CONFIG_FILE = "policy.json"


class PolicyLoadError(FileNotFoundError):
    """A policy directory that is missing or incomplete; the message names the path."""


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


class TinyPolicy(Policy):
    """Llama decoder + projector + the two tokenizers; implements `Policy` and `StepModel`.

    The image tokenizer stays on the CPU (images are decoded to uint8 there anyway); everything
    else follows `.to(device)`, the layout's tables included."""

    score_chunk = 256  # positions whose logits `score` holds at once

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

    def _apply(self, fn: Any, recurse: bool = True) -> TinyPolicy:
        """`.to()`, `.cuda()`, ...: the layout's tables follow the parameters."""
        super()._apply(fn, recurse)
        self.layout.to(self.device)
        return self

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
        if not (path / CONFIG_FILE).is_file():
            raise PolicyLoadError(f"{path}: not a policy checkpoint (missing {CONFIG_FILE})")
        config = TinyPolicyConfig(**json.loads((path / CONFIG_FILE).read_text()))
        backbone = LlamaForCausalLM.from_pretrained(path / "backbone")
        policy = TinyPolicy(config, backbone, load_text_tokenizer(path / "tokenizer"), load_image_tokenizer(path / "image_tokenizer"))
        if policy.projector is not None:
            policy.projector.load_state_dict(load_file(str(path / "projector.safetensors")))
        if policy.code_context is not None:
            policy.code_context.load_state_dict(load_file(str(path / "code_context.safetensors")))
        policy.record = read_record(path)
        return policy.eval()

    @property
    def lr_size(self) -> int:
        return self.config.lr_size

    @property
    def scale(self) -> int:
        return self.config.scale

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
        lr_t = to_tensor(list(lr))
        side = self.lr_size
        if tuple(lr_t.shape[-2:]) != (side, side):
            raise ValueError(f"LR photos must be {side}x{side}, got {lr_t.shape[-1]}x{lr_t.shape[-2]}")
        codes = self.image_tokenizer.encode(lr_t) if self.config.lr_input == "codes" else None
        cond = [self.layout.prompt_ids(None if codes is None else codes[i]) for i in range(len(lr_t))]
        uncond = [self.layout.prompt_ids(None if codes is None else codes[i], unconditional=True) for i in range(len(lr_t))]
        return PromptBatch(torch.tensor(cond), torch.tensor(uncond), lr_t).to(self.device)

    def image_codes(self, images: list[np.ndarray], lr: torch.Tensor) -> torch.Tensor:
        """uint8 chain images of one size -> (N, h, w) codes (residual over bicubic(LR) if so)."""
        return self.image_tokenizer.encode(to_tensor(list(images)), lr.cpu())

    def targets(self, prompts: PromptBatch, chains: list[VLCoT]) -> SequenceBatch:
        codes = {b: self.image_codes([getattr(c, b) for c in chains], prompts.lr) for b in IMAGE_BLOCKS}
        seqs = [
            self.layout.completion_ids({b: getattr(c, b) for b in TEXT_BLOCKS}, {b: codes[b][i] for b in IMAGE_BLOCKS})
            for i, c in enumerate(chains)
        ]
        return _pad(prompts, seqs, self.layout.pad)

    # ------------------------------------------------------------------------- scoring
    def logits(self, ids: torch.Tensor, lr: torch.Tensor | None) -> torch.Tensor:
        return self.backbone(inputs_embeds=self.embed(ids, lr), use_cache=False).logits

    def score(self, batch: SequenceBatch, sampling: Sampling) -> TokenScores:
        """Hidden states once, then the LM head and the log-probs a chunk of positions at a time.

        Only the chosen token's log-prob (and log Z) leave a chunk, so memory holds one chunk's
        logits, never (batch x length x vocabulary); with gradients each chunk is recomputed in
        the backward pass (activation checkpointing) for the same reason."""
        batch = batch.to(self.device)
        p, comp, valid = batch.prompt.input_ids.shape[1], batch.completion_ids, batch.completion_mask
        kinds = batch.kinds if batch.kinds is not None else self.layout.replay(comp, valid, sampling.max_text_tokens)
        ids = torch.cat([batch.prompt.input_ids, comp], 1)
        next_code = next_codes(kinds, p)
        if sampling.cfg is not None:  # conditional and LR-blanked rows in one pass, as in the rollout
            ids = torch.cat([ids, torch.cat([batch.prompt.uncond_ids, comp], 1)])
            next_code = torch.cat([next_code, next_code])
        hidden = self.backbone.model(inputs_embeds=self.embed(ids, batch.prompt.lr, next_code), use_cache=False).last_hidden_state
        hidden = hidden[:, p - 1 : -1]
        chunk = partial(self._score_chunk, sampling=sampling)
        lps, zs = [], []
        for s in range(0, comp.shape[1], self.score_chunk):
            part = (hidden[:, s : s + self.score_chunk], comp[:, s : s + self.score_chunk], kinds[:, s : s + self.score_chunk])
            if torch.is_grad_enabled():
                lp, z = checkpoint(chunk, *part, use_reentrant=False)
            else:
                lp, z = chunk(*part)
            lps.append(lp)
            zs.append(z)
        lp, log_z = torch.cat(lps, 1), torch.cat(zs, 1)
        return TokenScores(
            logprobs=torch.where(valid, lp, torch.zeros_like(lp)),
            text_mask=valid & (kinds >= 2),
            image_mask=valid & (kinds == IMAGE),
            log_z=log_z,
        )

    def _score_chunk(
        self, hidden: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor, sampling: Sampling
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 2B, c, H) hidden states of c positions -> (B, c) log-probs and log Z."""
        b, c = tokens.shape
        logits = self.backbone.lm_head(hidden).flatten(0, 1)  # (rows, V): one chunk's logits, the only big tensor
        cond, uncond = (logits[: b * c], logits[b * c :]) if sampling.cfg is not None else (logits, None)
        lp, z = engine.teacher_forced_logprobs(cond, uncond, tokens.flatten(), kinds.flatten(), self.layout, sampling)
        return lp.view(b, c), z.view(b, c)

    # ------------------------------------------------------------------- StepModel
    def prefill(self, input_ids: torch.Tensor, lr: torch.Tensor | None, cache_len: int | None) -> tuple[torch.Tensor, Any]:
        # a static (preallocated) cache: no per-step concatenation of the keys and values; built
        # under the model's device so its own counters are created there, not on the default device
        with torch.device(self.device):
            cache = StaticCache(config=self.backbone.config, max_cache_len=cache_len) if cache_len else None
        out = self.backbone(inputs_embeds=self.embed(input_ids, lr), cache=cache, use_cache=cache is not None, logits_to_keep=1)
        return out.logits[:, -1], cache

    def step(
        self,
        tokens: torch.Tensor,
        cache: Any,
        history: torch.Tensor,
        lr: torch.Tensor | None,
        need_logits: bool = True,
        next_code: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, Any]:
        if cache is None:  # no KV cache: the whole sequence again
            out = self.backbone(inputs_embeds=self.embed(history, lr, next_code), use_cache=False, logits_to_keep=1)
            return out.logits[:, -1], None
        inputs = {"inputs_embeds": self.embed(tokens[:, None], lr, None if next_code is None else next_code[:, -1:])}
        if not need_logits:  # the next token is forced in every row: fill the cache, skip the head
            self.backbone.model(**inputs, cache=cache, use_cache=True)
            return None, cache
        out = self.backbone(**inputs, cache=cache, use_cache=True)
        return out.logits[:, -1], cache

    def select(self, cache: Any, rows: torch.Tensor) -> Any:
        for layer in cache.layers:  # the static layers' preallocated keys/values, row-selected
            if getattr(layer, "keys", None) is not None:
                layer.keys, layer.values = layer.keys[rows], layer.values[rows]
                if hasattr(layer, "max_batch_size"):
                    layer.max_batch_size = len(rows)
        return cache

    # ------------------------------------------------------------------------- rollout
    def rollout(
        self, prompts: PromptBatch, group_size: int, sampling: Sampling, seed: int = 0, expected_final: bool = False
    ) -> Rollout:
        rows = prompts.to(self.device).repeat(group_size)
        expected = self.image_tokenizer.config.decode == "expected"
        raw = engine.generate(self, rows, sampling, seed, keep_image_probs=expected or expected_final)
        images = self.decode_images(raw, rows.lr, expected)
        finals = self.decode_images(raw, rows.lr, True, IMAGE_BLOCKS[-1:])[IMAGE_BLOCKS[-1]] if expected_final else None
        completions, chains = [], []
        ids_host, mask_host, finished = raw.completion_ids.cpu(), raw.completion_mask.cpu(), raw.finished.tolist()
        for i in range(len(rows)):
            ids = ids_host[i][mask_host[i]].tolist()
            done_images = tuple(images[b][i] for b in IMAGE_BLOCKS if images[b][i] is not None)
            completion = Completion(self.layout.completion_text(ids), done_images)
            completions.append(completion)
            chain = None
            if finished[i]:
                try:
                    chain = parse(completion)
                except VLCoTFormatError:
                    chain = None
            chains.append(chain)
        mask = raw.completion_mask
        return Rollout(
            batch=SequenceBatch(rows, raw.completion_ids, mask, kinds=raw.kinds),
            group=torch.arange(len(prompts), device=self.device).repeat_interleave(group_size),
            logprobs=raw.logprobs,
            text_mask=mask & (raw.kinds >= 2),
            image_mask=mask & (raw.kinds == IMAGE),
            truncated=raw.truncated,
            completions=completions,
            chains=chains,
            expected_final=finals,
        )

    def decode_images(
        self, raw: engine.RawRollout, lr: torch.Tensor, expected: bool, blocks: tuple[str, ...] = IMAGE_BLOCKS
    ) -> dict[str, list[np.ndarray | None]]:
        """Per image block, the uint8 image of each row whose block finished (else None): the
        drawn codes decoded, or (`expected`) the expected residual under their distributions.

        Decoded by the image tokenizer on the CPU: one transfer per rollout, not per step."""
        out: dict[str, list[np.ndarray | None]] = {}
        lr = lr.cpu()
        completion_ids, image_pos = raw.completion_ids.cpu(), (raw.kinds == IMAGE).cpu()
        image_probs = raw.image_probs.cpu() if expected else None
        counts = image_pos.sum(1)
        start = 0
        for block in IMAGE_BLOCKS:
            h, w = self.layout.image_grids[block]
            end = start + h * w
            ready = (counts >= end).nonzero().flatten().tolist()
            row_images: list[np.ndarray | None] = [None] * len(lr)
            if ready and block in blocks:
                if image_probs is not None:
                    probs = image_probs[ready, start:end].reshape(len(ready), h, w, -1)
                    pixels = self.image_tokenizer.decode_expected(probs, lr[ready])
                else:
                    codes = torch.stack([completion_ids[r][image_pos[r]][start:end] for r in ready])
                    codes = (codes - self.layout.code_offset).reshape(len(ready), h, w)
                    pixels = self.image_tokenizer.decode(codes, lr[ready])
                for r, img in zip(ready, to_uint8(pixels), strict=True):
                    row_images[r] = img
            if block in blocks:
                out[block] = row_images
            start = end
        return out


def next_codes(kinds: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """(B, L) completion slot kinds -> (B, P + L): per input position, the index (in program
    order) of the image code it predicts, -1 where the next token is not an image code."""
    image = kinds == IMAGE
    index = torch.where(image, image.long().cumsum(1) - 1, torch.full_like(kinds, -1))
    b = len(kinds)
    return torch.cat([kinds.new_full((b, prompt_length - 1), -1), index, kinds.new_full((b, 1), -1)], 1)


def _pad(prompts: PromptBatch, seqs: list[list[int]], pad: int) -> SequenceBatch:
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return SequenceBatch(prompts, ids, mask)


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> Policy:
    """Load a saved policy directory (the backbone named in its config) onto `device`."""
    return TinyPolicy.from_pretrained(path).to(device)


__all__ = ["FORCED", "TinyPolicy", "TinyPolicyConfig", "load_policy"]
