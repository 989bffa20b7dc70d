"""Projected wall time of the experiment grid at full scale on k workers, from a measured run.

Reads a ``results.json`` written by ``safetynet demo`` (its per-setting attack seconds and image
counts), turns them into seconds per attacked image per setting, and projects the attack phase
of a run on ``--n-train`` training images (the full CIFAR-10 split by default) on 1, 2, 4, ...
workers. Attacks are >90 % of the run time and embarrassingly parallel (one unit = a chunk of
images through one setting), so the projection divides by k; detector fits are reported apart.

    python benchmarks/grid_projection.py docs/results/cifar10/results.json --n-train 50000 --workers 1 2 4 8 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def project(results_path: Path, n_train: int, n_test: int, workers: list[int], calibration: float) -> dict:
    doc = json.loads(results_path.read_text())
    r = doc["results"]
    clean = r["clean"]
    # images each setting attacked in the measured run: natural train (all of it before calibration
    # splits existed, else the fit part) + natural test
    prov = r.get("provenance", {})
    measured_train = prov.get("natural_fit") or round(clean["train_images"] * clean["train_accuracy"])
    measured_test = prov.get("natural_test") or round(clean["test_images"] * clean["test_accuracy"])
    measured = measured_train + measured_test
    full_train = round(n_train * clean["train_accuracy"] * (1 - calibration))
    full_test = round(n_test * clean["test_accuracy"])
    rows, total = [], 0.0
    for a in r["attacks"]:
        per_image = a["seconds"] / measured
        secs = per_image * (full_train + full_test)
        total += secs
        rows.append({"setting": a["label"], "s_per_image": per_image, "hours_one_worker": secs / 3600})
    return {"source": str(results_path), "threads": doc["environment"].get("torch_threads"),
            "measured_images_per_setting": measured, "full_images_per_setting": full_train + full_test,
            "settings": rows, "attack_hours": {k: total / 3600 / k for k in workers}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--n-train", type=int, default=50000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--calibration", type=float, default=0.2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    p = project(args.results, args.n_train, args.n_test, args.workers, args.calibration)
    if args.json:
        print(json.dumps(p, indent=2))
        return
    print(f"from {p['source']} (torch threads {p['threads']}): {p['measured_images_per_setting']} images/setting measured,"
          f" {p['full_images_per_setting']} at full scale")
    print("| setting | s / image | hours on 1 worker |\n|---|---:|---:|")
    for row in p["settings"]:
        print(f"| {row['setting']} | {row['s_per_image']:.3f} | {row['hours_one_worker']:.2f} |")
    print("| workers | " + " | ".join(str(k) for k in p["attack_hours"]) + " |")
    print("|---|" + "---:|" * len(p["attack_hours"]))
    print("| attack phase (h) | " + " | ".join(f"{h:.1f}" if h >= 1 else f"{60 * h:.0f} min" for h in p["attack_hours"].values())
          + " |")


if __name__ == "__main__":
    main()
