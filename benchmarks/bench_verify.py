"""Time ``safetynet sceneproof verify`` on one real pair: start-up, whole call, model time.

For each model (the shipped feature model, verify's default, and the paper's CNN bundle,
``--model cnn``), in one process at one thread:

1. ``load``: reading the model from disk (the first call of a CLI run pays it once);
2. ``verify``: the whole call after start-up (decode the files, crop, resize, features or
   patches, verdict), median and max of ``--repeats`` calls;
3. ``model``: the same without decoding and resizing (features + trees, or the CNN + detectors
   on the patches), median of ``--repeats``.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_verify.py --out benchmarks/results/verify.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAFETYNET_DATA", REPO.parent / "shared" / "data"))
PAIR = (DATA / "rgbd/7scenes-kitchen/frame-000950.color.jpg", DATA / "rgbd/7scenes-kitchen/frame-000950.depth.png")


def measure(name: str, repeats: int) -> dict:
    from safetynet.data.rgbd.formats import read_depth_array, read_image
    from safetynet.data.rgbd.frame import make_frame
    from safetynet.sceneproof.frames import FrameSet
    from safetynet.sceneproof.verify import load_verifier, prepare_frames, verify, verify_frames, verify_frames_features

    t = time.perf_counter()
    model = load_verifier(None if name == "features" else "cnn")
    load_s = time.perf_counter() - t
    calls, verdict = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        verdict = verify(*PAIR, bundle=model)
        calls.append(time.perf_counter() - t)
    img = read_image(PAIR[0])
    dep, val = read_depth_array(PAIR[1])
    f = make_frame(img, dep, val, source="bench")
    fs = FrameSet(*prepare_frames(model, f.image[None], f.depth[None], f.valid[None]), ["b"], ["b"])
    judge = verify_frames_features if name == "features" else verify_frames
    model_s = []
    for _ in range(repeats):
        t = time.perf_counter()
        judge(model, fs)
        model_s.append(time.perf_counter() - t)
    return {"model": name, "load_s": load_s, "verify_median_s": statistics.median(calls), "verify_max_s": max(calls),
            "model_median_s": statistics.median(model_s), "verdict": verdict.verdict, "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="unused (nothing random); every command takes it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    rows = [measure(m, args.repeats) for m in ("features", "cnn")]
    for r in rows:
        print(f"{r['model']:>9}: load {r['load_s']:.3f} s, verify median {r['verify_median_s']:.3f} s "
              f"(max {r['verify_max_s']:.3f}), model {r['model_median_s']:.3f} s, verdict {r['verdict']}")
    if args.out:
        doc = {"pair": [str(p.relative_to(DATA)) for p in PAIR], "rows": rows, "python": platform.python_version(),
               "torch": torch.__version__, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
