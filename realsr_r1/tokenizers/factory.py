"""Save and load an image tokenizer of either kind: the directory's config names the kind.

Lives beside the kinds (not in their base module `image`), so the dependencies run one way:
factory -> kmeans/vq -> image. A kind is imported only when a directory holds one (the `vq`
kind pulls in transformers' Janus model).
"""

from __future__ import annotations

import json
from pathlib import Path

from realsr_r1.tokenizers.base import BaseError, Upsampler
from realsr_r1.tokenizers.image import CONFIG_FILE, ImageTokenizer, ImageTokenizerConfig, TokenizerError


def save_image_tokenizer(tokenizer: ImageTokenizer, out_dir: str | Path) -> None:
    """Write config + weights into `out_dir` (created); callers make it atomic with `atomic_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(tokenizer.config.to_json())
    tokenizer.save(out_dir)
    tokenizer.base.save(out_dir)


def load_image_tokenizer(path: str | Path) -> ImageTokenizer:
    """Load a tokenizer saved by `save_image_tokenizer`; errors name the directory."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise TokenizerError(f"{path}: no image tokenizer here (missing {CONFIG_FILE})")
    try:
        config = ImageTokenizerConfig.from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise TokenizerError(f"{cfg_path}: bad image tokenizer config: {err}") from None
    if config.kind == "kmeans":
        from realsr_r1.tokenizers.kmeans import KMeansTokenizer

        tokenizer: ImageTokenizer = KMeansTokenizer.load(path, config)
    elif config.kind == "vq":
        from realsr_r1.tokenizers.vq import VQTokenizer

        tokenizer = VQTokenizer.load(path, config)
    else:
        raise TokenizerError(f"{cfg_path}: unknown tokenizer kind {config.kind!r}")
    try:
        tokenizer.base = Upsampler.load(path, config.base)
    except BaseError as err:
        raise TokenizerError(str(err)) from None
    return tokenizer
