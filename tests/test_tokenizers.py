"""Image tokenizers (k-means, neural VQ) and the text BPE: round trips, quality, save/load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from realsr_r1.data.shards import read_records
from realsr_r1.tokenizers.base import bicubic
from realsr_r1.tokenizers.factory import load_image_tokenizer, save_image_tokenizer
from realsr_r1.tokenizers.fit import evaluate_reconstruction, fit_image_tokenizer
from realsr_r1.tokenizers.image import ImageTokenizerConfig, TokenizerError, VQConfig
from realsr_r1.tokenizers.text import IMAGE_START, grid_token, load_text_tokenizer, longest_block
from realsr_r1.vlcot import SPECIAL_TOKENS
from tests.helpers import REPO, write_split


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def test_kmeans_shapes_any_multiple_of_f(tiny_parts) -> None:
    chain, tok, _ = tiny_parts
    for h, w in [(16, 16), (32, 32), (64, 64), (24, 40)]:
        images = torch.nn.functional.interpolate(chain.images["final"][:3], size=(h, w), mode="area")
        codes = tok.encode(images, chain.lr[:3])
        assert codes.shape == (3, h // 8, w // 8) and codes.dtype == torch.long
        assert int(codes.max()) < tok.codebook_size
        assert tok.decode(codes, chain.lr[:3]).shape == (3, 3, h, w)
    with pytest.raises(TokenizerError, match="multiple of the tokenizer factor 8"):
        tok.encode(torch.zeros(1, 3, 20, 16), chain.lr[:1])
    with pytest.raises(TokenizerError, match="needs the LR"):
        tok.encode(chain.images["final"][:1])


def test_residual_kmeans_beats_bicubic_and_expected_decode(tiny_parts) -> None:
    chain, tok, _ = tiny_parts
    hr, lr = chain.images["final"], chain.lr
    codes = tok.encode(hr, lr)
    assert psnr(tok.decode(codes, lr), hr) > psnr(bicubic(lr, (64, 64)), hr) + 1.0
    one_hot = torch.nn.functional.one_hot(codes, tok.codebook_size).float()
    assert torch.allclose(tok.decode_expected(one_hot, lr), tok.decode(codes, lr), atol=1e-6)
    metrics = evaluate_reconstruction(tok, chain)
    assert metrics["final"]["psnr"] > metrics["final"]["bicubic_psnr"]
    assert 0 < metrics["codes"]["usage"] <= 1 and metrics["codes"]["perplexity"] > 1


def test_image_kmeans_beats_mean_colour(tiny_image_parts) -> None:
    chain, tok, _ = tiny_image_parts
    hr = chain.images["final"]
    rec = tok.decode(tok.encode(hr))
    mean_colour = hr.mean(dim=(2, 3), keepdim=True).expand_as(hr)
    assert psnr(rec, hr) > psnr(mean_colour, hr) + 3.0


def test_kmeans_save_load_identity(tiny_parts, tmp_path: Path) -> None:
    chain, tok, _ = tiny_parts
    save_image_tokenizer(tok, tmp_path / "tok")
    back = load_image_tokenizer(tmp_path / "tok")
    assert back.config == tok.config
    hr, lr = chain.images["middle"], chain.lr
    assert torch.equal(back.encode(hr, lr), tok.encode(hr, lr))
    with pytest.raises(TokenizerError, match="missing image_tokenizer.json"):
        load_image_tokenizer(tmp_path / "nowhere")


def test_vq_round_trip_after_short_training(tiny_parts, tmp_path: Path) -> None:
    chain, _, _ = tiny_parts
    vq = VQConfig(base_channels=32, channel_multiplier=(1, 1, 1, 1), embed_dim=8, latent_channels=32, steps=20, batch_size=8, lr=3e-3)
    cfg = ImageTokenizerConfig(kind="vq", codebook_size=32, residual=False, vq=vq)
    tok = fit_image_tokenizer(cfg, chain)
    hr = chain.images["final"][:16]
    codes = tok.encode(hr)
    assert codes.shape == (16, 8, 8)
    rec = tok.decode(codes)
    assert rec.shape == hr.shape
    grey = torch.full_like(hr, 0.5)
    assert psnr(rec, hr) > psnr(grey, hr)
    one_hot = torch.nn.functional.one_hot(codes, tok.codebook_size).float()
    assert torch.allclose(tok.decode_expected(one_hot), rec, atol=1e-5)
    save_image_tokenizer(tok, tmp_path / "vq")
    back = load_image_tokenizer(tmp_path / "vq")
    assert torch.equal(back.encode(hr), codes)
    assert torch.allclose(back.decode(codes), rec, atol=1e-5)
    # a saved JanusVQVAE loads as a pretrained tokenizer; factor and codes follow the model
    pre = replace(cfg, factor=4, codebook_size=7, vq=replace(vq, pretrained=str(tmp_path / "vq" / "vq"), steps=0))
    loaded = fit_image_tokenizer(pre, chain)
    assert (loaded.factor, loaded.codebook_size) == (8, 32)
    assert torch.equal(loaded.encode(hr), codes)


def test_text_tokenizer_round_trip_with_special_tokens(tiny_parts, tmp_path: Path) -> None:
    _, _, text = tiny_parts
    sample = "<degradation>medium blur, downsample, heavy noise</degradation><rough_image><|image|></rough_image>"
    ids = text.encode(sample, add_special_tokens=False)
    assert text.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == sample
    for token in (*SPECIAL_TOKENS, IMAGE_START, grid_token(8)):
        assert len(text.encode(token, add_special_tokens=False)) == 1, token
    assert len(text.encode("medium blur", add_special_tokens=False)) <= 3  # learned merges, not bytes
    text.save_pretrained(tmp_path / "text")
    back = load_text_tokenizer(tmp_path / "text")
    assert back.encode(sample, add_special_tokens=False) == ids and len(back) == len(text)
    unicode = "un chat gris — 猫"
    assert back.decode(back.encode(unicode, add_special_tokens=False)) == unicode


@pytest.mark.stage
def test_tokenizer_stage_writes_models_and_metrics(tmp_path: Path) -> None:
    write_split(tmp_path / "data/shards/train", 40, seed=1)
    write_split(tmp_path / "data/shards/val", 8, seed=2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tokenizer"]["image"]["codebook_size"] = 32
    params["tokenizer"]["image"]["kmeans"]["max_iter"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "stages.tokenizer"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "metrics/tokenizer.json").read_text())
    assert metrics["image"]["final"]["psnr"] > metrics["image"]["final"]["bicubic_psnr"]
    assert metrics["val_samples"] == 8
    assert load_image_tokenizer(tmp_path / "models/tokenizer/image").codebook_size == 32
    text = load_text_tokenizer(tmp_path / "models/tokenizer/text")
    assert text.convert_tokens_to_ids("<degradation>") is not None
    # no annotations here: the longest block is the longest degradation text, recorded in the tokenizer
    lengths = [len(text.encode(r["text"], add_special_tokens=False)) for r in read_records(tmp_path / "data/shards/train")]
    assert metrics["longest_text_block"] == longest_block(text) == max(lengths)
    params["tokenizer"]["image"]["colour"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = subprocess.run([sys.executable, "-m", "stages.tokenizer"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "tokenizer.image.colour" in bad.stderr


def test_streamed_fit_and_evaluation_equal_the_whole_split_in_memory(tmp_path: Path) -> None:
    import numpy as np

    from realsr_r1.data.shards import read_records, read_samples
    from realsr_r1.tokenizers.fit import (
        SCALES,
        chain_batches,
        fit_image_tokenizer_stream,
        stack_samples,
    )
    from realsr_r1.tokenizers.image import KMeansConfig, make_target, patchify
    from realsr_r1.tokenizers.kmeans import select_patches

    split = write_split(tmp_path / "train", n=30, seed=3)
    count = sum(1 for _ in read_records(split))
    assert count == 30 and [r["text"] for r in read_records(split)] == [s.degradation["text"] for s in read_samples(split)]
    cfg = ImageTokenizerConfig(codebook_size=32, seed=4, kmeans=KMeansConfig(max_iter=3, max_patches=900))
    whole = stack_samples(read_samples(split))
    targets = [make_target(whole.images[s], whole.lr, cfg.residual) for s in SCALES]

    # the subsample, computed the direct way: every patch concatenated, then the seeded choice
    every = torch.cat([patchify(t, 8).reshape(-1, 192) for t in targets]).numpy()
    expected = every[np.random.default_rng(cfg.seed).choice(len(every), 900, replace=False)]
    counts = [len(t) * (t.shape[-2] // 8) * (t.shape[-1] // 8) for t in targets]
    batches = ([make_target(c.images[s], c.lr, cfg.residual) for s in SCALES] for c in chain_batches(read_samples(split), 7))
    assert np.array_equal(select_patches(cfg, counts, batches), expected)

    in_memory = fit_image_tokenizer(cfg, whole)
    streamed = fit_image_tokenizer_stream(cfg, lambda: chain_batches(read_samples(split), 7), count)
    assert torch.equal(streamed.codebook, in_memory.codebook)
    by_batch = evaluate_reconstruction(streamed, chain_batches(read_samples(split), 4))
    at_once = evaluate_reconstruction(in_memory, whole)
    assert by_batch.keys() == at_once.keys()
    for key, values in at_once.items():
        assert by_batch[key] == pytest.approx(values, rel=1e-9), key
