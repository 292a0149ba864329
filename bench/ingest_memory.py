"""Peak memory of `prepare` and `tokenizer` at real scale: 2,000 photos of 512 px.

Synthesizes a photo source (512 px crops of the bundled photos, each with its own colour
shift so none is a duplicate, saved as JPEG, plus a sidecar annotations.json giving each photo
the captions and tags of the bundled photo it was cut from), then runs the stages `prepare`,
`synthesize`, `annotate` and `tokenizer` as DVC would (`python -m stages.NAME` in a work folder
holding the checkout's dvc.yaml and params.yaml) and prints each one's peak RSS, summed over the
stage and its worker processes (and their PSS, which counts shared libraries once), sampled every
50 ms. Target: prepare and tokenizer under 2 GiB of RSS.

params.yaml is the checkout's own with `synthesize.per_image` set to 2 (`--per-image`): the
default 4 crops per photo then give 16,000 samples (what the tokenizer streams), and synthesis
stays within minutes on 2 cores. Each stage's log goes to WORK/logs/STAGE.log (poll it).

Run: python bench/ingest_memory.py [--photos 2000] [--size 512] [--per-image 2] [--code REPO] [--keep DIR]
     [--stages prepare,synthesize,annotate,tokenizer]
(`--code` runs another checkout's stages on the same photos: a before/after comparison; `--keep`
keeps the photos, so a second run reuses them.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
STAGES = ("prepare", "synthesize", "annotate", "tokenizer")


def make_photos(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """`count` distinct size x size JPEG photos cut from the bundled photos, and their sidecar.

    Each photo gets the captions and tags of the bundled photo it was cut from, so `annotate`
    (sidecar backend) runs for real and the tokenizer's BPE sees a corpus of realistic size.
    """
    from realsr_r1.atomic import write_text
    from realsr_r1.data.images import read_photo
    from realsr_r1.data.sources import BUNDLED_SIDECAR, SIDECAR, list_source

    files = [f for f in list_source("bundled", [".png", ".jpg"]) if f.name != SIDECAR]
    bases = [read_photo(f.location) for f in files]
    bundled = json.loads(BUNDLED_SIDECAR.read_text(encoding="utf-8"))
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sidecar = {}  # the sidecar schema of docs/rewards.md (what `realsr annotate-template` lays out)
    for i in range(count):
        name, base = f"photo_{i:05d}.jpg", bases[i % len(bases)]
        sidecar[name] = bundled[files[i % len(files)].name]
        scale = size / min(base.shape[:2]) * rng.uniform(1.0, 1.5)
        img = cv2.resize(base, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crop = img[y : y + size, x : x + size].astype(np.float32) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
        bgr = cv2.cvtColor(np.clip(crop, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    write_text(folder / SIDECAR, json.dumps(sidecar, indent=1) + "\n")


def write_params(code: Path, work: Path, override: dict[str, dict[str, Any]]) -> None:
    """The checkout's own params.yaml with `override` applied; a key it lacks stops the bench."""
    params = yaml.safe_load((code / "params.yaml").read_text())
    for section, keys in override.items():
        for key, value in keys.items():
            if key not in params.get(section, {}):
                raise SystemExit(f"{code / 'params.yaml'}: no key {section}.{key} to override")
            params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass
class Peak:
    rss: int = 0  # summed RSS: counts the shared libraries of every worker again
    pss: int = 0  # summed PSS: shared pages split between the processes sharing them
    processes: int = 0  # processes in the tree when the RSS peaked
    wall: float = 0.0


def peak_memory(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Peak:
    """Run `cmd` (output to `log`); the peak memory of it and its descendants together, and the wall time."""
    start, peak = time.perf_counter(), Peak()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            mems = [p.memory_full_info() for p in [root, *root.children(recursive=True)]]
            rss = sum(m.rss for m in mems)
            if rss > peak.rss:
                peak.rss, peak.processes = rss, len(mems)
            peak.pss = max(peak.pss, sum(m.pss for m in mems))
        except psutil.Error:  # a worker ended between listing and reading it
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    peak.wall = time.perf_counter() - start
    return peak


def counts(work: Path, stage: str) -> str:
    """What the stage produced, from its outputs: GT crops, samples, annotated samples."""
    if stage == "prepare":
        return "GT crops: " + ", ".join(f"{s} {sum(1 for _ in (work / 'data/prepared' / s).glob('*.png'))}"
                                        for s in ("train", "val"))
    report = work / "metrics" / f"{stage}.json"
    if not report.is_file():
        return ""
    m = json.loads(report.read_text())
    if stage == "synthesize":
        return "samples: " + ", ".join(f"{s} {m[s]['samples']}" for s in ("train", "val"))
    if stage == "annotate":
        return f"annotated: {m['total']}"
    return f"samples: train {m['train_samples']}, val {m['val_samples']}, text vocab {m['text_vocab']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--per-image", type=int, default=2, help="synthesize.per_image (degradations per GT crop)")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="stages to run, in order; the others' outputs must be in the work folder (--keep)")
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose stages run (default: this one)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()
    if unknown := set(args.stages.split(",")) - set(STAGES):
        ap.error(f"--stages: unknown {', '.join(sorted(unknown))} (choose from {', '.join(STAGES)})")

    work = args.keep or Path(tempfile.mkdtemp(prefix="ingest-memory-"))
    raw = work / "data" / "raw"
    if not raw.is_dir():
        t = time.perf_counter()
        make_photos(raw, args.photos, args.size)
        print(f"{args.photos} photos of {args.size} px written in {time.perf_counter() - t:.0f} s")
    shutil.copy(args.code / "dvc.yaml", work / "dvc.yaml")
    write_params(args.code, work, {"synthesize": {"per_image": args.per_image}})
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    print(f"code: {args.code.resolve()}  ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    try:
        for stage in args.stages.split(","):
            m = peak_memory([sys.executable, "-m", f"stages.{stage}"], work, env, work / "logs" / f"{stage}.log")
            target = f" ({'under' if m.rss < 2 * GIB else 'OVER'} 2 GiB)" if stage in ("prepare", "tokenizer") else ""
            print(f"{stage:<10} peak RSS {m.rss / GIB:5.2f} GiB{target}, PSS {m.pss / GIB:5.2f} GiB, "
                  f"{m.processes} process(es)   wall {m.wall:5.0f} s   {counts(work, stage)}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
