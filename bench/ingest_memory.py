"""Peak memory of `prepare` and `tokenizer` at real scale: 2,000 photos of 512 px.

Synthesizes a photo source (512 px crops of the bundled photos, each with its own colour
shift so none is a duplicate, saved as JPEG), then runs the stages `prepare`, `synthesize` and
`tokenizer` as DVC would (`python -m stages.NAME` in a work folder holding dvc.yaml and the
default params.yaml) and prints each one's peak RSS, summed over the stage and its worker
processes, sampled every 50 ms. Target: prepare and tokenizer under 2 GiB.

Run: python bench/ingest_memory.py [--photos 2000] [--size 512] [--code REPO] [--keep DIR]
(`--code` runs another checkout's stages on the same data: a before/after comparison.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30


def make_photos(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """`count` distinct size x size JPEG photos cut from the bundled photos."""
    from realsr_r1.data.images import read_photo
    from realsr_r1.data.sources import SIDECAR, list_source

    bases = [read_photo(f.location) for f in list_source("bundled", [".png", ".jpg"]) if f.name != SIDECAR]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = bases[i % len(bases)]
        scale = size / min(base.shape[:2]) * rng.uniform(1.0, 1.5)
        img = cv2.resize(base, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        y, x = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        crop = img[y : y + size, x : x + size].astype(np.float32) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
        bgr = cv2.cvtColor(np.clip(crop, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"photo_{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])


def peak_rss(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run `cmd`; return the peak RSS of it and its descendants together, and the wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return peak, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--code", type=Path, default=REPO, help="checkout whose stages run (default: this one)")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="ingest-memory-"))
    raw = work / "data" / "raw"
    if not raw.is_dir():
        t = time.perf_counter()
        make_photos(raw, args.photos, args.size)
        print(f"{args.photos} photos of {args.size} px written in {time.perf_counter() - t:.0f} s")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(args.code / name, work / name)
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    print(f"code: {args.code.resolve()}  ({os.cpu_count()} cores)")
    try:
        for stage in ("prepare", "synthesize", "tokenizer"):
            rss, wall = peak_rss([sys.executable, "-m", f"stages.{stage}"], work, env)
            target = "" if stage == "synthesize" else f"  ({'under' if rss < 2 * GIB else 'OVER'} 2 GiB)"
            print(f"{stage:<11} peak RSS {rss / GIB:6.2f} GiB   wall {wall:6.0f} s{target}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
