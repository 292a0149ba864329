"""The `vlm` backend: caption GT images with any image-text-to-text model of `transformers`.

The model (LLaVA, Qwen2-VL, Janus, ...) and its processor load with `from_pretrained(path)`.
Each GT is asked four questions: the rough prompt on the 1/4-size GT, the middle prompt on the
1/2-size GT, the final and tags prompts on the full GT; decoding is greedy, so captions are
reproducible. Generation is batched per prompt; results are cached by GT content hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from realsr_r1.annotate.cache import CaptionCache
from realsr_r1.annotate.captions import Captions, Outcome, clean_text, parse_tags
from realsr_r1.config import VlmParams
from realsr_r1.data.images import pixel_hash
from realsr_r1.data.shards import ShardSample
from realsr_r1.errors import first_line

log = logging.getLogger(__name__)

# which GT scale each question is asked about: 4 -> hr_4, 2 -> hr_2, 1 -> hr
QUESTIONS = (("rough", 4), ("middle", 2), ("final", 1), ("tags", 1))


class VlmError(RuntimeError):
    """The model cannot be loaded or used; the message names the model path."""


@dataclass(frozen=True)
class GtImages:
    """One GT at the three scales the questions are asked about."""

    hr: np.ndarray
    hr_2: np.ndarray
    hr_4: np.ndarray

    def at(self, downscale: int) -> np.ndarray:
        return {1: self.hr, 2: self.hr_2, 4: self.hr_4}[downscale]


def model_fingerprint(model_dir: Path, cfg: VlmParams) -> str:
    """Hash of the model's config files, weight file sizes, prompts and generation settings."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        h.update(rel.encode())
        if path.suffix in {".json", ".txt", ".jinja", ".model"}:
            h.update(path.read_bytes())
        else:
            h.update(str(path.stat().st_size).encode())
    settings = {
        "prompts": cfg.prompts.model_dump(),
        "max_new_tokens": cfg.max_new_tokens,
        "max_tags": cfg.max_tags,
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


class VlmCaptioner:
    """A loaded model + processor that answers one prompt for a batch of images."""

    def __init__(self, cfg: VlmParams) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if cfg.model is None:
            raise VlmError("annotate.vlm.model is not set")
        self.path = Path(cfg.model)
        if not (self.path / "config.json").is_file():
            raise VlmError(
                f"annotate.vlm.model {self.path}: not a from_pretrained directory (no config.json)"
            )
        self.cfg = cfg
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.processor = AutoProcessor.from_pretrained(self.path)
            self.model = AutoModelForImageTextToText.from_pretrained(self.path).to(device).eval()
        except (OSError, ValueError, KeyError) as err:
            raise VlmError(f"annotate.vlm.model {self.path}: cannot load: {first_line(err)}") from None
        self.device = device
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues on the right

    def prompt_text(self, question: str) -> str:
        """The model's own chat format with one image, or `<image token>\\n<question>` without one."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        token = getattr(self.processor, "image_token", None) or "<image>"
        return f"{token}\n{question}"

    @torch.no_grad()
    def answer(self, images: Sequence[np.ndarray], question: str) -> list[str]:
        """Greedy answers to `question` about each image (one generate call)."""
        text = self.prompt_text(question)
        inputs = self.processor(
            images=[Image.fromarray(im) for im in images],
            text=[text] * len(images),
            return_tensors="pt",
            padding=True,
        ).to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def caption(self, gts: Sequence[GtImages]) -> list[Captions | str]:
        """Captions per GT, or the reason it failed; batched by `batch_size` per question."""
        answers: dict[str, list[str | None]] = {q: [None] * len(gts) for q, _ in QUESTIONS}
        errors: list[str | None] = [None] * len(gts)
        bs = self.cfg.batch_size
        for question, downscale in QUESTIONS:
            prompt = getattr(self.cfg.prompts, question)
            for start in range(0, len(gts), bs):
                idx = [i for i in range(start, min(start + bs, len(gts))) if errors[i] is None]
                if not idx:
                    continue
                try:
                    texts = self.answer([gts[i].at(downscale) for i in idx], prompt)
                except (RuntimeError, ValueError, IndexError) as err:
                    log.warning("vlm %s batch failed: %s", question, err)
                    for i in idx:
                        errors[i] = f"{question}: {type(err).__name__}: {first_line(err)}"
                    continue
                for i, t in zip(idx, texts, strict=True):
                    answers[question][i] = t
        out: list[Captions | str] = []
        for i in range(len(gts)):
            if errors[i] is not None:
                out.append(errors[i])
                continue
            texts = {q: clean_text(answers[q][i] or "") for q in ("rough", "middle", "final")}
            tags = parse_tags(answers["tags"][i] or "", self.cfg.max_tags)
            empty = [q for q, t in texts.items() if not t] + ([] if tags else ["tags"])
            if empty:
                out.append(f"empty answer for {', '.join(empty)}")
            else:
                out.append(Captions(texts["rough"], texts["middle"], texts["final"], tags))
        return out


class VlmBackend:
    """`VlmCaptioner` behind a `CaptionCache`: only GTs not seen before reach the model."""

    name = "vlm"

    def __init__(self, cfg: VlmParams, captioner: VlmCaptioner | None = None) -> None:
        self.captioner = captioner or VlmCaptioner(cfg)
        self.cache = CaptionCache(cfg.cache_dir, model_fingerprint(self.captioner.path, cfg))

    def caption(self, samples: Sequence[ShardSample]) -> list[Outcome]:
        """Per sample: its GT's captions from the cache or the model. Equal GTs are captioned once."""
        gts = [GtImages(s.hr, s.hr_2, s.hr_4) for s in samples]
        digests = [pixel_hash(g.hr) for g in gts]
        known: dict[str, Captions] = {}
        for d in dict.fromkeys(digests):
            hit = self.cache.get(d)
            if hit is not None:
                known[d] = hit
        todo = [d for d in dict.fromkeys(digests) if d not in known]
        first: dict[str, GtImages] = {}
        for d, g in zip(digests, gts):
            first.setdefault(d, g)
        fresh: dict[str, Captions | str] = (
            dict(zip(todo, self.captioner.caption([first[d] for d in todo]))) if todo else {}
        )
        for d, result in fresh.items():
            if isinstance(result, Captions):
                self.cache.put(d, result)
        out: list[Outcome] = []
        for d in digests:
            if d in known:
                out.append(Outcome(known[d], "cached"))
            elif isinstance(fresh[d], Captions):
                out.append(Outcome(fresh[d], "annotated"))
            else:
                out.append(Outcome(None, "failed", fresh[d]))
        return out
