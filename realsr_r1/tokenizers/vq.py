"""The `vq` image tokenizer: a neural VQ autoencoder, the `transformers` Janus VQ-VAE.

Trained here from a small config for longer budgets, or loaded from a saved `JanusVQVAE`
directory (a pretrained tokenizer) with `VQConfig.pretrained`. Codes are decoded with the
library's l2-normalised codebook entries; training uses the same normalisation, so the
straight-through path and `decode` agree.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import JanusVQVAE, JanusVQVAEConfig

from realsr_r1.tokenizers.image import ImageTokenizer, ImageTokenizerConfig, TokenizerError

log = logging.getLogger(__name__)
MODEL_DIR = "vq"


def vq_factor(model: JanusVQVAE) -> int:
    """Downsampling of the Janus encoder: one halving per level after the first."""
    return 2 ** (len(model.config.channel_multiplier) - 1)


class VQTokenizer(ImageTokenizer):
    """Target (in [-1, 1], what Janus expects) -> encoder -> nearest code; codes -> decoder."""

    def __init__(self, config: ImageTokenizerConfig, model: JanusVQVAE) -> None:
        super().__init__(config)
        if vq_factor(model) != config.factor or model.config.num_embeddings != config.codebook_size:
            raise TokenizerError(
                f"VQ model has f={vq_factor(model)} and {model.config.num_embeddings} codes, "
                f"config says f={config.factor} and {config.codebook_size}"
            )
        self.model = model.eval()

    def _latent_to_image(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(self.model.post_quant_conv(latent))

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        z = self.model.quant_conv(self.model.encoder(target))
        _, _, idx = self.model.quantize(z)
        return idx.reshape(z.shape[0], z.shape[2], z.shape[3])

    def _entries(self) -> torch.Tensor:
        return F.normalize(self.model.quantize.embedding.weight, dim=-1)

    def decode_target(self, codes: torch.Tensor) -> torch.Tensor:
        return self._latent_to_image(self._entries()[codes].permute(0, 3, 1, 2))

    def decode_target_expected(self, probs: torch.Tensor) -> torch.Tensor:
        return self._latent_to_image((probs.float() @ self._entries()).permute(0, 3, 1, 2))

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir / MODEL_DIR)

    @staticmethod
    def load(path: Path, config: ImageTokenizerConfig) -> VQTokenizer:
        if not (path / MODEL_DIR).is_dir():
            raise TokenizerError(f"{path}: missing {MODEL_DIR}/ (the saved VQ model)")
        return VQTokenizer(config, JanusVQVAE.from_pretrained(path / MODEL_DIR))


def build_vq(config: ImageTokenizerConfig) -> tuple[ImageTokenizerConfig, JanusVQVAE]:
    """A pretrained VQ from `vq.pretrained` (config factor/codes follow it) or a fresh one."""
    if config.vq.pretrained:
        path = Path(config.vq.pretrained)
        if not path.is_dir():
            raise TokenizerError(f"{path}: pretrained VQ directory not found")
        model = JanusVQVAE.from_pretrained(path)
        return replace(config, factor=vq_factor(model), codebook_size=model.config.num_embeddings), model
    vq = config.vq
    if 2 ** (len(vq.channel_multiplier) - 1) != config.factor:
        raise TokenizerError(
            f"vq.channel_multiplier has {len(vq.channel_multiplier)} levels: f would be "
            f"{2 ** (len(vq.channel_multiplier) - 1)}, not factor {config.factor}"
        )
    torch.manual_seed(config.seed)
    model = JanusVQVAE(
        JanusVQVAEConfig(
            embed_dim=vq.embed_dim,
            num_embeddings=config.codebook_size,
            latent_channels=vq.latent_channels,
            base_channels=vq.base_channels,
            channel_multiplier=list(vq.channel_multiplier),
            num_res_blocks=vq.num_res_blocks,
        )
    )
    return config, model


def train_vq(config: ImageTokenizerConfig, targets: list[torch.Tensor]) -> VQTokenizer:
    """Train (or fine-tune a pretrained) VQ on the targets: L1 + MSE reconstruction + the VQ loss."""
    config, model = build_vq(config)
    if config.vq.steps == 0:
        return VQTokenizer(config, model)
    gen = torch.Generator().manual_seed(config.seed)
    groups = [t for t in targets if len(t)]
    opt = torch.optim.AdamW(model.parameters(), lr=config.vq.lr, betas=(0.5, 0.9))
    model.train()
    for step in tqdm(range(config.vq.steps), desc="vq", unit="step"):
        data = groups[step % len(groups)]  # one size per batch; sizes alternate
        batch = data[torch.randint(len(data), (config.vq.batch_size,), generator=gen)]
        z = model.quant_conv(model.encoder(batch))
        q, vq_loss, _ = model.quantize(z)
        rec = model.decoder(model.post_quant_conv(F.normalize(q, dim=1)))
        loss = F.l1_loss(rec, batch) + F.mse_loss(rec, batch) + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            log.info("vq step %d loss %.4f", step, loss.item())
    return VQTokenizer(config, model.eval())
