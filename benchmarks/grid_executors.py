"""Wall time of one experiment grid: a single process vs k local processes vs k Ray workers.

Runs ``safetynet demo`` (each mode in a fresh process, cold cache, one torch thread per worker) on
the same images and grid and records the wall time, the phases' log times and whether the
results are the same (they must be: ``tests/test_executors.py`` checks it on a 2-node Ray
cluster). Run it on an otherwise idle machine: other busy processes distort the ratio.

    python benchmarks/grid_executors.py --data-dir ../shared/data/cifar10-jpg --n-train 1000 --n-test 500 \
        --workers 2 --out benchmarks/results/grid_executors.json
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
from pathlib import Path

from _attack_bench import environment  # noqa: E402  (benchmarks/ is the script's folder)


def _comparable(results: dict) -> dict:
    """The numbers that must not depend on the executor (timings and execution details removed)."""
    r = results["results"]
    return {"clean": r["clean"],
            "attacks": [{k: v for k, v in a.items() if k != "seconds"} for a in r["attacks"]],
            "detectors": r["detectors"]}


def run_mode(name: str, flags: list[str], common: list[str], scratch: Path) -> dict:
    out = scratch / name
    cmd = [sys.executable, "-m", "safetynet.cli", "-v", "demo", *common, *flags, "--out", str(out),
           "--cache", str(scratch / f"cache-{name}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SAFETYNET_PROGRESS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: safetynet demo failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    return {"mode": name, "flags": flags, "wall_seconds": round(wall, 1),
            "job_seconds": results["results"]["seconds"], "execution": results["results"]["execution"],
            "_comparable": _comparable(results)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="CIFAR-10 folder (e.g. ../shared/data/cifar10-jpg)")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--grid", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["serial", "processes", "ray"], choices=["serial", "processes", "ray"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/grid_executors.json")
    args = ap.parse_args(argv)
    common = ["--dataset", "cifar10", "--data-dir", args.data_dir, "--grid", args.grid, "--n-train", str(args.n_train),
              "--n-test", str(args.n_test), "--threads", "1", "--seed", str(args.seed)]
    flags = {"serial": ["--workers", "1"], "processes": ["--workers", str(args.workers)],
             "ray": ["--workers", str(args.workers), "--ray"]}
    scratch = Path(tempfile.mkdtemp(prefix="grid-executors-"))
    try:
        rows = [run_mode(m, flags[m], common, scratch) for m in args.modes]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reference = rows[0]["_comparable"]
    for r in rows:
        r["same_results_as_" + rows[0]["mode"]] = r.pop("_comparable") == reference
        r["speedup_vs_" + rows[0]["mode"]] = round(rows[0]["wall_seconds"] / r["wall_seconds"], 2)
    doc = {"benchmark": "experiment grid wall time by executor", "argv": sys.argv, "config": vars(args),
           "environment": {**environment(), "cpus": os.cpu_count()}, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(out)
    for r in rows:
        sys.stdout.write(f"{r['mode']:>10}: {r['wall_seconds']:7.1f} s wall  (x{r['speedup_vs_' + rows[0]['mode']]:.2f})  "
                         f"same results: {r['same_results_as_' + rows[0]['mode']]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
