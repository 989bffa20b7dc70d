"""Copy a finished training run into the package as the shipped ``cifar10-resnet20`` and register it.

Measures the checkpoint's accuracy on all 10,000 CIFAR-10 test images and writes that number (not
the training log's) into ``src/safetynet/weights/registry.json`` with the file's sha256::

    python scripts/ship_pretrained.py runs/cifar10-resnet20-long \
        --data-dir ../shared/data/cifar10-jpg --command "safetynet train ..." [--log NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training output folder (model.safetensors + config.json + log.jsonl)")
    p.add_argument("--data-dir", required=True, help="CIFAR-10 folder to measure test accuracy on")
    p.add_argument("--command", required=True, help="the exact command(s) that trained it, for provenance")
    p.add_argument("--log", action="append", default=[], help="extra training log to ship, NAME=PATH")
    p.add_argument("--name", default="cifar10-resnet20")
    args = p.parse_args(argv)

    import torch

    from safetynet._io import sha256_file, write_json_atomic
    from safetynet.data import load_dataset
    from safetynet.models import load_checkpoint
    from safetynet.train import evaluate_accuracy

    torch.set_num_threads(1)
    run = Path(args.run)
    model, _ = load_checkpoint(run)
    acc = evaluate_accuracy(model, load_dataset("cifar10", "test", args.data_dir))
    dst = REPO / "src" / "safetynet" / "weights" / args.name
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.glob("train_log*.jsonl"):
        old.unlink()
    for f in ("model.safetensors", "config.json"):
        shutil.copy(run / f, dst / f)
        (dst / f).chmod(0o644)
    shutil.copy(run / "log.jsonl", dst / "train_log.jsonl")
    for item in args.log:
        name, _, path = item.partition("=")
        shutil.copy(path, dst / f"train_log_{name}.jsonl")
    registry = REPO / "src" / "safetynet" / "weights" / "registry.json"
    entries = json.loads(registry.read_text()) if registry.exists() else {}
    entries[args.name] = {"path": args.name, "sha256": sha256_file(dst / "model.safetensors"),
                          "test_accuracy": round(acc, 4), "command": args.command}
    write_json_atomic(registry, entries)
    print(json.dumps({"name": args.name, "test_accuracy": acc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
