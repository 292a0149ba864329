"""A tiny random Janus, saved in the Janus-Pro folder layout: what CI and the tests train.

No hub is reachable here, so the real loading code is exercised on a folder built from a
config: a `JanusForConditionalGeneration` (hidden 64, 2 layers, a 1-layer vision tower, a VQ
with 32 base channels: about 8 M parameters), a byte-level BPE with Janus' special tokens,
Janus' image processor and a chat template in Janus' format. `JanusPolicy.from_janus` then loads
it exactly as it loads `deepseek-community/Janus-Pro-1B`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessor,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from realsr_r1.atomic import atomic_dir
from realsr_r1.tokenizers.corpus import vocabulary_phrases
from realsr_r1.vlcot import PROMPT

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
USER, ASSISTANT = "<|User|>", "<|Assistant|>"
# Janus' conversation format: "<|User|>: ...\n\n<|Assistant|>:", the image where it is named
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image_placeholder>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Janus' special tokens; bos is prepended as Janus' tokenizer does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [BOS, EOS, PAD, IMAGE, BOI, EOI, USER, ASSISTANT]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=16384,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, image_size: int = 64, codebook_size: int = 512, hidden: int = 64) -> JanusConfig:
    """Janus-Pro's architecture at toy width; 16 spare embedding rows, as the real model has spare rows."""
    text = LlamaConfig(
        vocab_size=len(tokenizer) + 16,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    patch = 16
    vision = JanusVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
        mlp_ratio=2.0,
        projection_dim=hidden,
        num_image_tokens=(image_size // patch) ** 2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=codebook_size,
        base_channels=32,  # its GroupNorm needs multiples of 32
        channel_multiplier=[1, 1, 2, 2, 4],  # four halvings: 16x, as Janus-Pro
        latent_channels=64,
        num_res_blocks=1,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
    )
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE))


def build_tiny_janus(out: str | Path, texts: Iterable[str] = (), seed: int = 0, image_size: int = 64) -> Path:
    """Write a random-init tiny Janus folder (weights, config, tokenizer, processor) atomically.

    `texts`: what the BPE learns besides the prompt and the degradation vocabulary."""
    tokenizer = tiny_tokenizer([PROMPT, *vocabulary_phrases(), *texts])
    config = tiny_config(tokenizer, image_size=image_size)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    image_processor = JanusImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, num_image_tokens=config.vision_config.num_image_tokens
    )
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out)


def bundled_texts() -> list[str]:
    """The captions of the bundled sample photos (what the tiny BPE learns by default)."""
    from realsr_r1.annotate.sidecar import load_sidecar
    from realsr_r1.data.sources import BUNDLED_SIDECAR

    return [text for c in load_sidecar(BUNDLED_SIDECAR).values() for text in (c.rough_understand, c.middle_understand, c.final_understand)]
