"""The residual tokenizer's parts that keep pictures whole: the learned base (RAISR filters) and
the lapped codebook, on real degraded crops."""

from __future__ import annotations

import pytest
import torch

from realsr_r1.data.shards import decode_sample
from realsr_r1.evaluate.seams import seam_ratio
from realsr_r1.tokenizers.base import BaseConfig, BaseError, FilterFit, Upsampler, bicubic
from realsr_r1.tokenizers.factory import load_image_tokenizer, save_image_tokenizer
from realsr_r1.tokenizers.fit import SCALES, fit_image_tokenizer, stack_samples
from realsr_r1.tokenizers.image import ImageTokenizerConfig, KMeansConfig
from realsr_r1.tokenizers.kmeans import lapped_patches, lapped_window, overlap_add
from tests.helpers import encoded_samples


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def split():
    """Train and held-out crops of real photos, degraded by the synthesize stage (other seeds)."""
    train = stack_samples(decode_sample(s) for s in encoded_samples(192, seed=0))
    held_out = stack_samples(decode_sample(s) for s in encoded_samples(48, seed=7))
    return train, held_out


def fitted(train, config: BaseConfig, batches: int = 1) -> Upsampler:
    fit = FilterFit(config)
    step = -(-len(train) // batches)
    for start in range(0, len(train), step):
        for scale in SCALES:
            fit.add(train.lr[start : start + step], train.images[scale][start : start + step])
    return fit.solve()


def test_filters_beat_bicubic_on_crops_they_never_saw(split) -> None:
    """On 192 crops (the pipeline fits on 6,656): fewer buckets and more shrinkage, for so little data."""
    train, held_out = split
    base = fitted(train, BaseConfig(kind="filters", angles=4, ridge=64.0))
    for scale in SCALES:
        gt = held_out.images[scale]
        size = tuple(gt.shape[-2:])
        assert psnr(base(held_out.lr, size), gt) > psnr(bicubic(held_out.lr, size), gt) + 0.05, scale
    truth = float(seam_ratio(held_out.images["final"]).mean())
    assert float(seam_ratio(base(held_out.lr, (64, 64))).mean()) < truth * 1.1  # blended patches: no LR grid


def test_the_fit_does_not_depend_on_how_the_samples_are_batched(split) -> None:
    """Integer normal equations: one batch or three give the same filters, bit for bit."""
    train, _ = split
    one, three = fitted(train, BaseConfig(kind="filters")), fitted(train, BaseConfig(kind="filters"), batches=3)
    for f in (1, 2, 4):
        assert torch.equal(one.filters[f], three.filters[f])


def test_a_factor_it_was_not_fitted_for_is_one_clear_line(split) -> None:
    train, _ = split
    base = fitted(train, BaseConfig(kind="filters"))
    with pytest.raises(BaseError, match=r"no filters for 16x16 -> 48x48 \(fitted factors: \[1, 2, 4\]\)"):
        base(train.lr[:1], (48, 48))
    with pytest.raises(BaseError, match="window must be odd"):
        FilterFit(BaseConfig(kind="filters", window=4))


@pytest.mark.parametrize("overlap", [0, 2, 4])
def test_lapped_patches_add_back_to_the_image(overlap: int) -> None:
    x = torch.rand(2, 3, 24, 40)
    assert torch.allclose(overlap_add(lapped_patches(x, 8, overlap), 8, overlap), x, atol=1e-5)
    side = lapped_window(8, overlap).diagonal().sqrt()  # the 1-D window
    # a cell's falling edge and the next one's rising edge: squares sum to one (Princen-Bradley)
    assert torch.allclose(side[8:] ** 2 + side[: 2 * overlap] ** 2, torch.ones(2 * overlap))


def test_a_lapped_residual_tokenizer_draws_no_seams_and_saves_whole(split, tmp_path) -> None:
    """The GT's own codes through plain 8x8 blocks show the grid; lapped patches do not, and the
    learned base survives a save and load."""
    train, held_out = split
    gt, lr = held_out.images["final"], held_out.lr
    plain = fit_image_tokenizer(ImageTokenizerConfig(codebook_size=64, kmeans=KMeansConfig(max_iter=5)), train)
    lapped = fit_image_tokenizer(
        ImageTokenizerConfig(codebook_size=64, kmeans=KMeansConfig(max_iter=5, overlap=4), base=BaseConfig(kind="filters")), train
    )
    truth = float(seam_ratio(gt).mean())
    assert float(seam_ratio(plain.reconstruct(gt, lr)).mean()) > truth + 0.5
    assert float(seam_ratio(lapped.reconstruct(gt, lr)).mean()) < truth * 1.1
    codes = lapped.encode(gt, lr)
    one_hot = torch.nn.functional.one_hot(codes, 64).float()
    assert torch.allclose(lapped.decode_expected(one_hot, lr), lapped.decode(codes, lr), atol=1e-6)
    save_image_tokenizer(lapped, tmp_path / "tok")
    again = load_image_tokenizer(tmp_path / "tok")
    assert torch.equal(again.decode(codes, lr), lapped.decode(codes, lr))
    (tmp_path / "tok/base.safetensors").unlink()
    with pytest.raises(ValueError, match="missing base.safetensors"):
        load_image_tokenizer(tmp_path / "tok")
