"""Thin command-line wrapper over the typed entry points; ``safetynet --help`` lists the jobs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .errors import SafetyNetError


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train_config import TrainConfig

    p = sub.add_parser("train", help="train a classifier (resumable; one checkpoint per epoch)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            typ = float if isinstance(default, float) else int if isinstance(default, int) else str
            p.add_argument(flag, type=typ, default=default)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train import train
    from .train_config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    metrics = train(cfg)
    print(json.dumps(metrics))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="clean test accuracy of a checkpoint (folder or shipped name)")
    p.add_argument("--model", default="cifar10-resnet20", help="checkpoint folder or shipped model name")
    p.add_argument("--dataset", default="cifar10-sample", help="cifar10-sample | cifar10 | digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n", type=int, default=None, help="first N test images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import time

    import torch

    from .data import load_dataset
    from .models import resolve_model
    from .train import evaluate_accuracy

    torch.manual_seed(args.seed)
    model, source = resolve_model(args.model)
    data = load_dataset(args.dataset, "test", args.data_dir)
    t0 = time.time()
    acc = evaluate_accuracy(model, data, limit=args.n)
    n = len(data) if args.n is None else min(args.n, len(data))
    print(json.dumps({"model": source, "dataset": args.dataset, "images": n, "accuracy": acc,
                      "seconds": round(time.time() - t0, 2), "seed": args.seed}))
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download CIFAR-10 (explicit, needs a network) or describe a data set")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("download", help="download, verify (md5) and unpack the official CIFAR-10 archive")
    d.add_argument("dataset", choices=["cifar10"])
    d.add_argument("--to", required=True, help="folder to unpack into (gets cifar-10-batches-bin/ or -py/)")
    d.add_argument("--form", choices=["bin", "py"], default="bin", help="binary (default) or python version")
    d.add_argument("--sha256", default=None, help="also require this sha256 of the archive")
    d.set_defaults(func=_run_data)
    i = dsub.add_parser("info", help="print image counts per class as JSON")
    i.add_argument("--dataset", default="cifar10-sample", help="cifar10-sample | cifar10 | digits")
    i.add_argument("--data-dir", default=None, help="CIFAR-10 folder (binary, python or image-folder form)")
    i.add_argument("--split", choices=["train", "test"], default="test")
    i.set_defaults(func=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    if args.data_command == "download":
        from .data.download import download_cifar10

        path = download_cifar10(args.to, args.form, sha256=args.sha256)
        print(json.dumps({"dataset": args.dataset, "form": args.form, "path": str(path)}))
        return 0
    from .data import load_dataset

    ds = load_dataset(args.dataset, args.split, args.data_dir)
    counts = ds.labels.bincount(minlength=len(ds.classes)).tolist()
    print(json.dumps({"dataset": args.dataset, "split": args.split, "images": len(ds),
                      "image_shape": list(ds.images_u8.shape[1:]), "per_class": dict(zip(ds.classes, counts))}))
    return 0


def _add_attack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="craft type-I adversarial examples for the first N images of a data set")
    p.add_argument("--model", required=True, help="checkpoint folder (model.safetensors + config.json) or shipped name")
    p.add_argument("--attack", required=True, help="fgsm | bim | bim-l2 | pgd | pgd-l2 | deepfool")
    p.add_argument("--eps", type=float, nargs="+", default=None,
                   help="budget(s) in [0, 1] pixel units (L-inf) or L2 norm; optional for deepfool")
    p.add_argument("--steps", type=int, default=None, help="iterations (default: the attack's own)")
    p.add_argument("--step-size", type=float, default=None, help="per-step size (default: the attack's own)")
    p.add_argument("--overshoot", type=float, default=None, help="deepfool overshoot (default 0.02)")
    p.add_argument("--k", type=int, default=None, help="push the label out of the clean top-k (DeepFool-5: --k 5)")
    p.add_argument("--targeted", action="store_true", help="attack towards a random (seeded) class != label")
    p.add_argument("--n", type=int, default=1000, help="first N images of the split (default 1000)")
    p.add_argument("--dataset", default="cifar10-sample", help="cifar10-sample | cifar10 | digits")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (for --dataset cifar10)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seeds random starts and random targets")
    p.add_argument("--out", required=True, help=".npz file to write (atomically)")
    p.set_defaults(func=_run_attack)


def _run_attack(args: argparse.Namespace) -> int:
    from .attacks.job import AttackConfig, attack_dataset

    names = {f.name for f in dataclasses.fields(AttackConfig)} - {"extra"}
    summary = attack_dataset(AttackConfig(**{k: v for k, v in vars(args).items() if k in names}))
    print(json.dumps(summary))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the paper's experiment: attack, fit detectors, evaluate, write a report (offline default)")
    p.add_argument("--dataset", default="cifar10-sample", help="cifar10-sample (embedded, default) | cifar10 (needs --data-dir)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (binary, python or image-folder form)")
    p.add_argument("--model", default="cifar10-resnet20", help="shipped model name or checkpoint folder")
    p.add_argument("--layer", default="layer3.2.relu", help="layer to tap (default: last residual stage, the paper's x5)")
    p.add_argument("--pool", type=int, default=None, help="average-pool the tapped maps to POOLxPOOL (default: all units)")
    p.add_argument("--n-train", type=int, default=None, help="clean images attacked to train the detectors")
    p.add_argument("--n-test", type=int, default=None, help="clean images attacked to test them")
    p.add_argument("--grid", default=None, choices=("demo", "paper"),
                   help="attack grid: demo (one setting per attack) or paper (several eps); default demo for the sample, paper for cifar10")
    p.add_argument("--metzen-epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="safetynet-demo", help="output folder for report.md, results.json and figures/")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .experiment import ExperimentConfig, run_experiment

    grid = args.grid or ("paper" if args.dataset == "cifar10" else "demo")
    cfg = ExperimentConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, layer=args.layer, pool=args.pool,
                           n_train=args.n_train, n_test=args.n_test, grid=grid, metzen_epochs=args.metzen_epochs,
                           threads=args.threads, seed=args.seed, out=args.out)
    results = run_experiment(cfg)
    summary = {"report": str(Path(args.out) / "report.md"), "seconds": results["seconds"], "clean": results["clean"],
               "same_attack_auc": {d: {r["attack"]: round(r["auc"], 4) for r in v["same_attack"]}
                                   for d, v in results["detectors"].items()}}
    print(json.dumps(summary, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safetynet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_data(sub)
    _add_attack(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except SafetyNetError as e:
        print(f"safetynet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("safetynet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
