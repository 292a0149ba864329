"""Shared test helpers, the one module tests import helpers from (servers: tests/servers.py).

- paths: the repository, scikit-image's bundled photos; shard byte comparisons
- test data: crops of real photos degraded by the synthesize stage's own code, written as shards
- tiny models: the tiny tokenizer chain (conftest.py's session fixtures hold the shared ones),
  tiny policy configs and checkpoints, ragged prompt batches
- tiny projects: an SFT / GRPO project folder, a stage run as a subprocess, killing it mid-run
- copies of this repository with tiny pipeline params, for DVC and the Prefect flow
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data
import yaml

from realsr_r1.config import DegradationParams
from realsr_r1.data.prepare import GtCrop
from realsr_r1.data.shards import write_shards
from realsr_r1.data.synthesis import synthesize_crop

REPO = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(skimage.data.__file__).parent


def tar_bytes(folder: Path) -> dict[str, bytes]:
    """Every tar under `folder` by relative path: for byte-identity checks of shards."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.tar"))}


# ------------------------------------------------------------------------ test data
def gt_and_lr(name: str, box: tuple[int, int, int, int], scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A crop of a scikit-image photo (y, x, h, w) and its area-downscaled LR."""
    y, x, h, w = box
    gt = np.ascontiguousarray(getattr(skimage.data, name)()[y : y + h, x : x + w])
    return gt, cv2.resize(gt, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "coins")


def gt_crops(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`n` random uint8 RGB crops of real photos (downscaled so a crop holds a scene)."""
    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        scale = 128 / min(img.shape[:2])
        photos.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - size + 1)
        x = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(np.ascontiguousarray(photo[y : y + size, x : x + size]))
    return crops


def encoded_samples(n: int, size: int = 64, scale: int = 4, seed: int = 0) -> list[dict]:
    """Shard samples of `n` degraded crops, made by the synthesize stage's own `synthesize_crop`."""
    crops = [
        GtCrop(f"{seed:03d}-{i:06d}", "train", gt, {"source": f"{PHOTOS[i % len(PHOTOS)]}.png"})
        for i, gt in enumerate(gt_crops(n, size, seed))
    ]
    return [sample for crop in crops for sample in synthesize_crop(crop, 1, DegradationParams(), scale, seed)]


def write_split(split_dir: Path, n: int, seed: int, shard_size: int = 1000) -> Path:
    write_shards(encoded_samples(n, seed=seed), split_dir, shard_size=shard_size)
    return split_dir


# ------------------------------------------------------------------------ tiny models
UNDERSTANDING = (
    "a grey cat with green eyes lying on a red blanket",
    "an astronaut in a white suit in front of a flag",
    "a cup of coffee on a wooden table, steam rising",
    "a rocket on the launch pad under a clear blue sky",
)


def annotation_texts() -> list[str]:
    """Texts like the annotate stage writes (degradation + three understanding levels)."""
    from realsr_r1.tokenizers.corpus import text_corpus

    degradations = [json.loads(s["degradation.json"])["text"] for s in encoded_samples(12, seed=5)]
    return text_corpus([], degradations) + list(UNDERSTANDING) * 3


@functools.cache
def tiny_text_tokenizer():
    """The BPE text tokenizer with the layout tokens, trained once per process (it is not mutated)."""
    from realsr_r1.tokenizers.text import train_text_tokenizer

    return train_text_tokenizer(annotation_texts(), vocab_size=400, min_frequency=1, max_grid=8)


def tiny_chain(n: int = 48, codebook: int = 64, residual: bool = True, seed: int = 0):
    """(ChainImages, fitted k-means tokenizer, text tokenizer) on real crops, in about a second.

    Tests take it from the session fixtures `tiny_parts`/`tiny_image_parts` (conftest.py)."""
    from realsr_r1.data.shards import decode_sample
    from realsr_r1.tokenizers.fit import fit_image_tokenizer, stack_samples
    from realsr_r1.tokenizers.image import ImageTokenizerConfig, KMeansConfig

    chain = stack_samples(decode_sample(s) for s in encoded_samples(n, seed=seed))
    cfg = ImageTokenizerConfig(codebook_size=codebook, residual=residual, seed=seed, kmeans=KMeansConfig(max_iter=5))
    return chain, fit_image_tokenizer(cfg, chain), tiny_text_tokenizer()


def tiny_policy_config(**changes):
    from realsr_r1.policy.tiny import TinyPolicyConfig

    base = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "intermediate_size": 64}
    return TinyPolicyConfig(**{**base, **changes})


def tiny_policy_checkpoint(root, tiny_parts, max_text_tokens: int):
    """A tiny untrained policy saved by `realsr init-policy` under `root` from the shared tokenizers,
    with the params file it was built from: (policy dir, params.yaml path)."""
    from typer.testing import CliRunner

    from realsr_r1.cli import app
    from realsr_r1.tokenizers.factory import save_image_tokenizer

    _, image_tok, text_tok = tiny_parts
    save_image_tokenizer(image_tok, root / "tokenizer/image")
    text_tok.save_pretrained(root / "tokenizer/text")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["policy"].update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
    params["rollout"].update(max_text_tokens=max_text_tokens)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["init-policy", "--tokenizer", str(root / "tokenizer"), "-o", str(root / "policy"), "--params", str(root / "params.yaml")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "M parameters" in res.output
    return root / "policy", root / "params.yaml"


def ragged(prompts, cut: list[int], pad: int):
    """Row i loses `cut[i]` prompt tokens after bos, so the prompts differ in length: all of them
    left-padded into one batch with a mask, and each alone, unpadded."""
    import torch

    from realsr_r1.policy.interface import PromptBatch

    b, p = prompts.input_ids.shape
    alone = []
    for i, k in enumerate(cut):
        keep = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1 + k, p)])
        alone.append(PromptBatch(prompts.input_ids[i : i + 1, keep], prompts.uncond_ids[i : i + 1, keep], prompts.lr[i : i + 1]))
    length = p - min(cut)
    ids, uncond = torch.full((b, length), pad), torch.full((b, length), pad)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, row in enumerate(alone):
        n = row.input_ids.shape[1]
        ids[i, length - n :], uncond[i, length - n :], mask[i, length - n :] = row.input_ids[0], row.uncond_ids[0], True
    return PromptBatch(ids, uncond, prompts.lr, mask), alone


def chains_of(chain, n: int):
    """`n` VLCoT chains on the first `n` images of a ChainImages, captions from UNDERSTANDING."""
    from realsr_r1.tokenizers.image import to_uint8
    from realsr_r1.vlcot import VLCoT

    imgs = {k: to_uint8(v[:n]) for k, v in chain.images.items()}
    return [
        VLCoT(
            degradation="medium blur, downsample, heavy noise, light compression",
            rough_understand=UNDERSTANDING[i % 4],
            middle_understand=UNDERSTANDING[(i + 1) % 4],
            final_understand=UNDERSTANDING[(i + 2) % 4],
            rough_image=imgs["rough"][i],
            middle_image=imgs["middle"][i],
            final_image=imgs["final"][i],
        )
        for i in range(n)
    ]


# ------------------------------------------------------------------------ tiny projects
TAGS = (["cat", "blanket"], ["astronaut", "flag"], ["cup", "table"], ["rocket", "sky"])


def annotate(split_dir: Path, out: Path, skip: int = 0) -> None:
    """Records for the samples of a split (the last `skip` left out), as the annotate stage writes."""
    from realsr_r1.annotate.records import AnnotationRecord, write_records
    from realsr_r1.data.shards import read_records
    from realsr_r1.train.data import shard_keys, shard_urls

    keys = shard_keys(shard_urls(str(split_dir.parent), split_dir.name))
    texts = [r["text"] for r in read_records(split_dir)]
    records = [
        AnnotationRecord(k, "x.png", t, *(UNDERSTANDING[i % 4],) * 3, tags=TAGS[i % 4])
        for i, (k, t) in enumerate(zip(keys, texts, strict=True))
    ]
    write_records(out, records[: len(records) - skip])


def project(root: Path, tiny_parts, shard_size: int = 1000, **sft) -> Path:
    """A project folder with 24 train / 4 val shard samples, annotations, an initial tiny policy
    and params for a six-step run (checkpoints every 2 steps), updated by `sft`."""
    from realsr_r1.policy.tiny import TinyPolicy

    _, image_tokenizer, text_tokenizer = tiny_parts
    for split, n, seed in (("train", 24, 3), ("val", 4, 4)):
        write_split(root / "data/shards" / split, n, seed, shard_size)
        annotate(root / "data/shards" / split, root / "data/annotations" / f"{split}.jsonl")
    TinyPolicy.build(tiny_policy_config(), text_tokenizer, image_tokenizer).save_pretrained(root / "models/policy_init")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # max_text_tokens a number: the fixture's tokenizer records no longest block for `auto`
    params["rollout"].update(group_size=1, max_text_tokens=64, max_new_tokens=256, device="cpu")
    params["sft"].update(
        steps=6, batch_size=4, checkpoint_interval=2, eval_interval=3, early_eval_step=3,
        workers=0, shuffle_buffer=8, device="cpu", lr=3e-3, warmup_steps=1, dropout=0.1,
    )
    params["sft"].update(sft)
    params["val_samples"] = 2
    params["threads"] = 1  # tiny models: a second thread mostly waits, and tests run side by side
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def grpo_project(root: Path, tiny_parts, shard_size: int = 1000, **grpo) -> Path:
    """`project` with its initial policy as models/sft and params for a four-step GRPO run."""
    project(root, tiny_parts, shard_size=shard_size)
    shutil.copytree(root / "models/policy_init", root / "models/sft")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["rollout"].update(group_size=2, max_text_tokens=6)
    defaults = {"steps": 4, "prompts": 2, "checkpoint_interval": 2, "workers": 0, "shuffle_buffer": 8, "device": "cpu"}
    params["grpo"].update({**defaults, "lr": 1e-3, **grpo})
    params["val_samples"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run_stage(root: Path, stage: str, params: str = "params.yaml", **kw) -> subprocess.Popen:
    """`python -m stages.<stage>` in `root` (stderr piped): the test needs the `stage` marker."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "REALSR_PARAMS": params, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, stderr=subprocess.PIPE, text=True, **kw)


def run_sft(root: Path, params: str = "params.yaml", **kw) -> subprocess.Popen:
    return run_stage(root, "sft", params, **kw)


def run_grpo(root: Path, **kw) -> subprocess.Popen:
    return run_stage(root, "grpo", **kw)


def kill_once_written(proc: subprocess.Popen, path: Path) -> None:
    """SIGKILL `proc`'s process group as soon as `path` exists: mid-run, in a step or the next checkpoint write."""
    deadline = time.monotonic() + 600
    while not path.is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def weights(root: Path) -> dict:
    """The SFT stage's saved backbone weights."""
    from safetensors.torch import load_file

    return load_file(str(root / "models/sft/backbone/model.safetensors"))


# ------------------------------------------------------------------------ copies of this repository
GIT_ID = {
    "GIT_AUTHOR_NAME": "realsr",
    "GIT_AUTHOR_EMAIL": "realsr@localhost",
    "GIT_COMMITTER_NAME": "realsr",
    "GIT_COMMITTER_EMAIL": "realsr@localhost",
}


# params for a copy that runs the whole DAG in minutes: 17 photos x 2 crops x 1 degradation
# (synthesize.per_image 2 is then a change), two SFT and two GRPO steps with every evaluation and checkpoint
TINY_PIPELINE: dict[str, Any] = {
    "threads": 1,
    "prepare.crops_per_image": 2,
    "synthesize.per_image": 1,
    "sft.steps": 2,
    "sft.batch_size": 4,
    "val_samples": 2,
    "sft.eval_interval": 1,
    "sft.early_eval_step": 1,
    "sft.checkpoint_interval": 1,
    "sft.workers": 0,
    "grpo.steps": 2,
    "grpo.prompts": 2,
    "grpo.checkpoint_interval": 1,
    "grpo.workers": 0,
    "evaluate.sheets": 2,
    "rollout.group_size": 2,
    "rollout.max_text_tokens": 16,  # an untrained policy runs every text block to its cap: keep it short
}


def set_params(repo: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys (`sft.steps`) in `repo`/params.yaml; a key it lacks is an error, so a
    renamed param cannot leave a test running on the defaults unnoticed."""
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise KeyError(f"{path}: no key {dotted!r}")
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def copy_repo(src: Path, dst: Path, params: dict[str, Any] | None = None, exclude: tuple[str, ...] = ()) -> None:
    """Copy the files git would see (tracked + untracked, not ignored; none starting with an
    `exclude` prefix) and make `dst` a git repo whose first commit has `params` (dotted keys)
    set in params.yaml."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=src,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        path = src / rel
        if path.is_file() and not path.is_symlink() and not rel.startswith(exclude):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)
    if params:
        set_params(dst, params)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy of the project"]):
        subprocess.run(["git", *args], cwd=dst, check=True, env={**os.environ, **GIT_ID})
