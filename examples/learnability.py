"""How much of the degradation reward and of the PSNR over bicubic can any predictor that reads the
LR photo get? Policy-independent reference points for the SFT targets, from the shards alone.

    python examples/learnability.py [--shards data/shards] [--tokenizer models/tokenizer/image]

Degradation: the best constant answer, a k-nearest-neighbour answer on LR image statistics, and
one gradient-boosted classifier per slot of the description (kernel, resize, noise, JPEG of each
stage and the final step) on the LR pixels and statistics, all scored with the reward itself.
PSNR: bicubic, the image tokenizer's base alone, Real-ESRGAN x4plus (the field's pretrained
reference, when the `peer` extra is installed), a small CNN trained from scratch, ridge regression
from each 6x6 LR window to the 8x8 residual over the base it sits under, and a logistic regression
over the residual codebook decoded by its expectation (what the policy's expected decoding does),
on the Y channel as the SFT evaluation scores it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from torch import nn
from tqdm import tqdm

from realsr_r1.data.shards import ShardSample, evenly_spaced, read_samples
from realsr_r1.degrade.describe import Item, _kernel_item, _resize_item, compression_severity, noise_severity
from realsr_r1.evaluate import realesrgan
from realsr_r1.quality import border, psnr_ssim_y
from realsr_r1.rewards.degradation import item_score
from realsr_r1.tokenizers.base import bicubic
from realsr_r1.tokenizers.factory import load_image_tokenizer
from realsr_r1.tokenizers.image import patchify, to_tensor, to_uint8, unpatchify

Slot = tuple[Item, ...] | str  # the items of one choice (none: empty), or a severity / the final order


def slots(draw: dict) -> dict[str, Slot]:
    """The description's independent choices, one typed value each (`assemble` turns them back into items)."""
    pad, size, out = draw["kernel_pad"], draw["gt_size"], {}
    for name in ("stage1", "stage2"):
        stage = draw[name]
        out[f"{name}.blur"] = (_kernel_item(stage["blur"], pad),) if stage["blur"]["applied"] else ()
        out[f"{name}.resize"] = tuple(_resize_item(size, stage["resize"]["size"]))
        size = stage["resize"]["size"]
        out[f"{name}.noise"] = noise_severity(draw["measured"][f"{name}_noise_std"])
        out[f"{name}.jpeg"] = compression_severity(stage["jpeg"]["quality"])
    final = draw["final"]
    out["final.resize"] = tuple(_resize_item(size, final["resize"]["size"]))
    out["final.sinc"] = (_kernel_item(final["sinc"], pad),) if final["sinc"]["applied"] else ()
    out["final.jpeg"] = compression_severity(final["jpeg"]["quality"])
    out["final.order"] = final["order"]
    return out


def assemble(s: dict[str, Slot]) -> list[Item]:
    """Items in the order `describe` writes them."""
    items: list[Item] = []
    for name in ("stage1", "stage2"):
        items += [*s[f"{name}.blur"], *s[f"{name}.resize"], ("noise", s[f"{name}.noise"]), ("compression", s[f"{name}.jpeg"])]
    resize = [*s["final.resize"], *s["final.sinc"]]
    jpeg = [("compression", s["final.jpeg"])]
    return items + (resize + jpeg if s["final.order"] == "resize_then_jpeg" else jpeg + resize)


def statistics(lr: np.ndarray) -> np.ndarray:
    """(N, h, w, 3) in [0, 1] -> per-image noise / blur / chroma / blockiness statistics."""
    lap = 4 * lr[:, 1:-1, 1:-1] - lr[:, :-2, 1:-1] - lr[:, 2:, 1:-1] - lr[:, 1:-1, :-2] - lr[:, 1:-1, 2:]
    dx, chroma = np.diff(lr, axis=2), lr - lr.mean(-1, keepdims=True)
    parts = [np.abs(dx).mean((1, 2)), np.abs(lap).mean((1, 2)), np.sqrt((lap**2).mean((1, 2))),
             np.median(np.abs(lap), axis=(1, 2)), np.percentile(np.abs(lap), 90, axis=(1, 2)), lr.std((1, 2)),
             np.abs(chroma).mean((1, 2)), np.abs(np.diff(chroma, axis=2)).mean((1, 2))]  # fmt: skip
    return np.log(np.concatenate(parts, 1) + 1e-4)


def best_answer(candidates: list[list[Item]], truths: list[list[Item]]) -> tuple[list[Item], float]:
    means = [np.mean([item_score(c, t) for t in truths]) for c in candidates]
    return candidates[int(np.argmax(means))], float(max(means))


def degradation_bounds(train: list[ShardSample], val: list[ShardSample], rng: np.random.Generator) -> None:
    ops_tr = [[tuple(o) for o in s.degradation["operations"]] for s in train]
    ops_va = [[tuple(o) for o in s.degradation["operations"]] for s in val]
    counts: dict[tuple, int] = {}
    for o in ops_tr:
        counts[tuple(o)] = counts.get(tuple(o), 0) + 1
    frequent = list(max(counts, key=counts.get))
    print(f"most frequent train answer: {np.mean([item_score(frequent, t) for t in ops_va]):.3f} on val")
    fit = [ops_tr[i] for i in rng.choice(len(ops_tr), 500, replace=False)]
    constant, _ = best_answer([list(c) for c in counts], fit)
    print(
        f"best constant answer (chosen on train): {np.mean([item_score(constant, t) for t in ops_va]):.3f} on val"
    )

    lr_tr = np.stack([s.lr for s in train]).astype(np.float32) / 255
    lr_va = np.stack([s.lr for s in val]).astype(np.float32) / 255
    f_tr, f_va = statistics(lr_tr), statistics(lr_va)
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    f_tr, f_va = (f_tr - mu) / sd, (f_va - mu) / sd
    picked = rng.choice(len(val), min(300, len(val)), replace=False)
    knn = []
    for i in tqdm(picked, desc="kNN answers", leave=False):
        near = np.argsort(((f_tr - f_va[i]) ** 2).sum(1))[:200]
        answer, _ = best_answer([ops_tr[j] for j in near[:60]] + [constant], [ops_tr[j] for j in near])
        knn.append(item_score(answer, ops_va[i]))
    print(f"kNN (200 neighbours on LR statistics): {np.mean(knn):.3f} on {len(picked)} val samples")

    x_tr = np.concatenate([f_tr, lr_tr.reshape(len(lr_tr), -1)], 1)
    x_va = np.concatenate([f_va, lr_va.reshape(len(lr_va), -1)], 1)
    s_tr, s_va = [slots(s.degradation) for s in train], [slots(s.degradation) for s in val]
    assert all(assemble(s) == o for s, o in zip(s_tr, ops_tr)), "slots() no longer mirrors describe()"
    predicted: list[dict[str, Slot]] = [{} for _ in val]
    for key in tqdm(s_tr[0], desc="per-slot classifiers", leave=False):
        values = sorted({s[key] for s in s_tr} | {s[key] for s in s_va}, key=repr)  # class index -> value
        index = {v: i for i, v in enumerate(values)}
        y = np.array([index[s[key]] for s in s_tr])
        for row, label in zip(
            predicted, HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x_tr, y).predict(x_va)
        ):
            row[key] = values[label]
        truth = np.array([index[s[key]] for s in s_va])
        guess = np.array([index[p[key]] for p in predicted])
        majority = np.bincount(y).argmax()
        print(f"  {key:14s} accuracy {np.mean(guess == truth):.2f} (majority {np.mean(truth == majority):.2f})")
    score = np.mean([item_score(assemble(p), t) for p, t in zip(predicted, ops_va)])
    print(f"per-slot gradient boosting on LR pixels + statistics: {score:.3f} on val")


def windows(lr: torch.Tensor, f: int) -> np.ndarray:
    """Per code cell of the x4 image: the LR pixels under it plus a one-cell ring, mean removed."""
    cell = f // 4
    padded = torch.nn.functional.pad(lr, (cell,) * 4, mode="replicate")
    w = padded.unfold(2, 3 * cell, cell).unfold(3, 3 * cell, cell)  # N, 3, h, w, 3c, 3c
    w = w.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(0, 2)
    return (w - w.mean(1, keepdim=True)).numpy()


def small_cnn(lr: torch.Tensor, hr: torch.Tensor, lr_val: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """The strongest simple baseline: 7 convolutions on the LR (64 channels), two x2 pixel-shuffle
    steps and a head (520k weights, a 19 px LR receptive field), predicting the residual over
    bicubic, trained from scratch with L1 (batch 32, Adam 2e-4); val outputs."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()]
    for _ in range(2):
        layers += [nn.Conv2d(64, 256, 3, padding=1), nn.PixelShuffle(2), nn.ReLU()]
    head = nn.Conv2d(64, 3, 3, padding=1)
    nn.init.zeros_(head.weight)  # starts as bicubic: the residual is learned from zero
    nn.init.zeros_(head.bias)
    net = nn.Sequential(*layers, head)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    size = tuple(hr.shape[-2:])
    residual = hr - bicubic(lr, size)
    draw = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="small CNN", leave=False):
        batch = torch.randint(len(lr), (32,), generator=draw)
        loss = (net(lr[batch]) - residual[batch]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (bicubic(lr_val, size) + net(lr_val)).clamp(0, 1)


def psnr_bounds(
    train: list[ShardSample], val: list[ShardSample], tokenizer_dir: str, cnn_steps: int, rng: np.random.Generator, seed: int
) -> None:
    tok = load_image_tokenizer(tokenizer_dir)
    f = tok.factor

    def arrays(samples: list[ShardSample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        lr, hr = to_tensor([s.lr for s in samples]), to_tensor([s.hr for s in samples])
        residual = patchify(tok.target(hr, lr), f)  # N, h, w, 3*f*f: over the tokenizer's base
        return lr, hr, residual, windows(lr, f)

    lr_tr, hr_tr, res_tr, x_tr = arrays(train)
    lr_va, _, res_va, x_va = arrays(val)
    gts = [s.hr for s in val]
    size = tuple(val[0].hr.shape[:2])
    base = tok.base(lr_va, size)
    pixels = border(size[1], lr_va.shape[-1])

    def psnr(images: torch.Tensor) -> float:
        return float(psnr_ssim_y(to_uint8(images.clamp(0, 1)), gts, pixels)[0].mean())

    print(f"bicubic: {psnr(bicubic(lr_va, size)):.2f} dB PSNR-Y on {len(val)} val samples")
    print(f"the tokenizer's base ({tok.config.base.kind}), no codes: {psnr(base):.2f} dB")
    if (why := realesrgan.unavailable()) is None:  # the field's reference reads the same LR
        model = realesrgan.RealESRGAN(threads=torch.get_num_threads())
        outs = [model.upscale(s.lr) for s in tqdm(val, desc="Real-ESRGAN", leave=False)]
        print(f"Real-ESRGAN x4plus (pretrained): {psnr(to_tensor(outs)):.2f} dB")
    else:
        print(f"Real-ESRGAN x4plus: skipped ({why})")
    if cnn_steps:
        print(f"small CNN, {cnn_steps} steps from scratch: {psnr(small_cnn(lr_tr, hr_tr, lr_va, cnn_steps, seed)):.2f} dB")
    y_tr = res_tr.flatten(0, 2).numpy()
    pred = Ridge(alpha=1.0).fit(x_tr, y_tr).predict(x_va)
    ridge = unpatchify(torch.from_numpy(pred).float().view(res_va.shape), f)
    print(f"base + ridge, 3x3-cell LR window -> residual: {psnr(base + ridge):.2f} dB")
    codes = tok.encode_target(unpatchify(res_tr, f)).flatten().numpy()
    fit = rng.choice(len(codes), min(60_000, len(codes)), replace=False)
    clf = LogisticRegression(max_iter=200).fit(x_tr[fit], codes[fit])
    probs = np.zeros((len(x_va), tok.codebook_size), np.float32)
    probs[:, clf.classes_] = clf.predict_proba(x_va)
    expected = tok.decode_target_expected(torch.from_numpy(probs).view(*res_va.shape[:3], -1))
    print(f"base + logistic over the {tok.codebook_size} codes, expected decoding: {psnr(base + expected):.2f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--tokenizer", default="models/tokenizer/image")
    ap.add_argument("--val-samples", type=int, default=None, help="val samples scored, evenly spread (default: the whole split)")
    ap.add_argument("--cnn-steps", type=int, default=500, help="training steps of the small CNN (0: skip it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    train = list(tqdm(read_samples(f"{args.shards}/train"), desc="train shards", leave=False))
    val = list(tqdm(read_samples(f"{args.shards}/val"), desc="val shards", leave=False))
    val = evenly_spaced(val, args.val_samples or len(val))
    print(f"{len(train)} train / {len(val)} val samples, LR {train[0].lr.shape[1]}x{train[0].lr.shape[0]}")
    degradation_bounds(train, val, rng)
    psnr_bounds(train, val, args.tokenizer, args.cnn_steps, rng, args.seed)


if __name__ == "__main__":
    main()
