"""Speed of the RGB-D scene simulator (no peer exists; reported as frames/s at 1 thread).

    OMP_NUM_THREADS=1 python benchmarks/bench_simulator.py --n 100 --size 128
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from safetynet.data.rgbd.simulator import simulate_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    simulate_scenes(args.n, size=(args.size, args.size), seed=args.seed)
    dt = time.perf_counter() - t
    print(json.dumps({"frames": args.n, "size": args.size, "seconds": round(dt, 2), "frames_per_second": round(args.n / dt, 1)}))


if __name__ == "__main__":
    main()
