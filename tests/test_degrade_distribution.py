"""20,000 parameter draws match every range and probability of the RealESRNet x4plus settings (docs/method.md).

Frequencies must lie within 3 standard errors of the stated probability, values within their
bounds. The draws are seeded, so the test is deterministic.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from realsr_r1.config import DegradationParams
from realsr_r1.degrade import draw_degradation

N = 20_000


@pytest.fixture(scope="module")
def draws() -> list[dict]:
    rng = np.random.default_rng(12345)
    p = DegradationParams()
    return [draw_degradation(rng, p, (256, 256), 4) for _ in range(N)]


def assert_frequency(hits: int, n: int, p: float, what: str) -> None:
    se = math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) <= 3 * se, f"{what}: {hits / n:.4f} vs {p} (3 SE = {3 * se:.4f}, n={n})"


def assert_within(values: list[float], lo: float, hi: float, what: str) -> None:
    assert values, what
    assert min(values) >= lo and max(values) <= hi, f"{what}: [{min(values)}, {max(values)}] not in [{lo}, {hi}]"
    # and the range is actually covered (uniform draws come close to both ends)
    span = hi - lo
    assert min(values) < lo + 0.05 * span and max(values) > hi - 0.05 * span, f"{what} does not cover its range"


KERNEL_PROBS = {"iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "generalized_aniso": 0.03, "plateau_iso": 0.12, "plateau_aniso": 0.03}


@pytest.mark.parametrize(("stage", "sigma_max", "blur_prob"), [("stage1", 3.0, 1.0), ("stage2", 1.5, 0.8)])
def test_blur(draws: list[dict], stage: str, sigma_max: float, blur_prob: float) -> None:
    blurs = [d[stage]["blur"] for d in draws]
    applied = [b for b in blurs if b["applied"]]
    if blur_prob < 1:
        assert_frequency(len(applied), N, blur_prob, f"{stage} blur applied")
    else:
        assert len(applied) == N
    sinc = [b for b in applied if b["kernel_type"] == "sinc"]
    assert_frequency(len(sinc), len(applied), 0.1, f"{stage} sinc")
    gauss = [b for b in applied if b["kernel_type"] != "sinc"]
    kinds = Counter(b["kernel_type"] for b in gauss)
    for kind, p in KERNEL_PROBS.items():
        assert_frequency(kinds[kind], len(gauss), p, f"{stage} {kind}")
    sizes = Counter(b["kernel_size"] for b in applied)
    assert set(sizes) == {7, 9, 11, 13, 15, 17, 19, 21}
    for size in sizes:
        assert_frequency(sizes[size], len(applied), 1 / 8, f"{stage} kernel size {size}")
    assert_within([b["sigma_x"] for b in gauss] + [b["sigma_y"] for b in gauss], 0.2, sigma_max, f"{stage} sigma")
    iso = [b for b in gauss if b["kernel_type"] in ("iso", "generalized_iso", "plateau_iso")]
    assert all(b["sigma_x"] == b["sigma_y"] and b["rotation"] == 0 for b in iso)
    aniso = [b for b in gauss if b["kernel_type"].endswith("aniso")]
    assert_within([b["rotation"] for b in aniso], -math.pi, math.pi, f"{stage} rotation")
    gen = [b["beta"] for b in gauss if b["kernel_type"].startswith("generalized")]
    assert_within(gen, 0.5, 4.0, f"{stage} generalized beta")
    assert_frequency(sum(b < 1 for b in gen), len(gen), 0.5, f"{stage} generalized beta below 1")
    assert_within([b["beta"] for b in gauss if b["kernel_type"].startswith("plateau")], 1.0, 2.0, f"{stage} plateau beta")
    small = [b["sinc_cutoff"] for b in sinc if b["kernel_size"] < 13]
    large = [b["sinc_cutoff"] for b in sinc if b["kernel_size"] >= 13]
    assert_within(small, math.pi / 3, math.pi, f"{stage} sinc cutoff (size < 13)")
    assert_within(large, math.pi / 5, math.pi, f"{stage} sinc cutoff (size >= 13)")


@pytest.mark.parametrize(
    ("stage", "probs", "up", "down"),
    [("stage1", {"up": 0.2, "down": 0.7, "keep": 0.1}, 1.5, 0.15), ("stage2", {"up": 0.3, "down": 0.4, "keep": 0.3}, 1.2, 0.3)],
)
def test_resize(draws: list[dict], stage: str, probs: dict, up: float, down: float) -> None:
    resizes = [d[stage]["resize"] for d in draws]
    directions = Counter(r["direction"] for r in resizes)
    for direction, p in probs.items():
        assert_frequency(directions[direction], N, p, f"{stage} resize {direction}")
    assert_within([r["scale"] for r in resizes if r["direction"] == "up"], 1.0, up, f"{stage} up scale")
    assert_within([r["scale"] for r in resizes if r["direction"] == "down"], down, 1.0, f"{stage} down scale")
    assert all(r["scale"] == 1.0 for r in resizes if r["direction"] == "keep")
    modes = Counter(r["interpolation"] for r in resizes)
    for mode in ("area", "bilinear", "bicubic"):
        assert_frequency(modes[mode], N, 1 / 3, f"{stage} {mode}")


def test_stage_sizes_follow_the_reference(draws: list[dict]) -> None:
    d = draws[0]
    assert d["stage1"]["resize"]["size"] == [int(256 * d["stage1"]["resize"]["scale"])] * 2
    assert d["stage2"]["resize"]["size"] == [int(64 * d["stage2"]["resize"]["scale"])] * 2  # relative to the LR size
    assert all(x["final"]["resize"]["size"] == [64, 64] for x in draws)


@pytest.mark.parametrize(("stage", "sigma_max", "poisson_max"), [("stage1", 30.0, 3.0), ("stage2", 25.0, 2.5)])
def test_noise(draws: list[dict], stage: str, sigma_max: float, poisson_max: float) -> None:
    noises = [d[stage]["noise"] for d in draws]
    gaussian = [n for n in noises if n["type"] == "gaussian"]
    assert_frequency(len(gaussian), N, 0.5, f"{stage} gaussian noise")
    assert_within([n["sigma"] for n in gaussian], 1.0, sigma_max, f"{stage} gaussian sigma")
    assert_within([n["scale"] for n in noises if n["type"] == "poisson"], 0.05, poisson_max, f"{stage} poisson scale")
    assert_frequency(sum(n["gray"] for n in noises), N, 0.4, f"{stage} gray noise")


def test_jpeg_and_final(draws: list[dict]) -> None:
    for stage in ("stage1", "stage2", "final"):
        qualities = [d[stage]["jpeg"]["quality"] for d in draws]
        assert min(qualities) == 30 and max(qualities) == 95, stage
        assert all(isinstance(q, int) for q in qualities)
        assert_frequency(sum(q <= 62 for q in qualities), N, 33 / 66, f"{stage} jpeg quality median")
    finals = [d["final"] for d in draws]
    assert_frequency(sum(f["sinc"]["applied"] for f in finals), N, 0.8, "final sinc")
    assert_frequency(sum(f["order"] == "resize_then_jpeg" for f in finals), N, 0.5, "final order")
    assert_within([f["sinc"]["sinc_cutoff"] for f in finals], math.pi / 3, math.pi, "final sinc cutoff")
    modes = Counter(f["resize"]["interpolation"] for f in finals)
    for mode in ("area", "bilinear", "bicubic"):
        assert_frequency(modes[mode], N, 1 / 3, f"final {mode}")
