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
    p.add_argument("--candidates", type=int, default=None,
                   help="deepfool: most likely classes tried per step (default 10; 3 is ~2x faster)")
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
    p.add_argument("--pooled", type=int, default=1,
                   help="the extra 'pooled' SafetyNet detector quantizes each channel average-pooled to POOLEDxPOOLED (default 1)")
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
    cfg = ExperimentConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, layer=args.layer,
                           pool=args.pool, pooled=args.pooled, n_train=args.n_train, n_test=args.n_test, grid=grid, metzen_epochs=args.metzen_epochs,
                           threads=args.threads, seed=args.seed, out=args.out)
    results = run_experiment(cfg)
    summary = {"report": str(Path(args.out) / "report.md"), "seconds": results["seconds"], "clean": results["clean"],
               "same_attack_auc": {d: {r["attack"]: round(r["auc"], 4) for r in v["same_attack"]}
                                   for d, v in results["detectors"].items()}}
    print(json.dumps(summary, indent=1))
    return 0


def _add_sceneproof(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sceneproof", help="SceneProof: tell real RGB-D captures from fakes (train, evaluate, verify)")
    ssub = p.add_subparsers(dest="sceneproof_command", required=True)
    v = ssub.add_parser("verify", help="judge one RGB-D pair: real (exit 0), fake (1), rejected as adversarial (2), "
                                       "bad input (3)")
    v.add_argument("image", help="colour image (PNG/JPG)")
    v.add_argument("depth", help="depth map: 16-bit PNG/PGM, .npy (metres), Middlebury .pfm or Sintel .dpt")
    v.add_argument("--model", default=None, help="SceneProof bundle folder (default: the shipped one)")
    v.add_argument("--depth-scale", type=float, default=None,
                   help="stored depth units per metre (default 1000 = millimetres for PNG/PGM, 1 for .npy/.dpt)")
    v.add_argument("--depth-format", default=None, help="override the depth format (png, pgm, npy, pfm, dpt, sun, nyu-raw)")
    v.add_argument("--json", action="store_true", help="print the verdict and per-patch evidence as JSON")
    v.set_defaults(func=_run_sceneproof)
    t = ssub.add_parser("train", help="train a SceneProof bundle (classifier + detectors) from the shared RGB-D data")
    t.add_argument("--out", required=True, help="bundle folder to write")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-dir", default=None, help="folder holding rgbd/ (default $SAFETYNET_DATA or ../shared/data)")
    t.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                   help="train on the real captures (--no-real: simulator only)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other SceneProofConfig field, e.g. --set epochs=2 sim_frames=100")
    t.set_defaults(func=_run_sceneproof)
    e = ssub.add_parser("evaluate", help="the paper's SceneProof Tables 1-4 and held-out captures: report.md + results.json")
    e.add_argument("--model", default=None, help="SceneProof bundle folder (default: the shipped one)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--data-dir", default=None, help="folder holding rgbd/ and rgbd-heldout/")
    e.add_argument("--n-attack", type=int, default=200, help="validation patches attacked (half real, half fake)")
    e.add_argument("--steps", type=int, default=20, help="iterations of every white-box attack (default 20)")
    e.add_argument("--n-fit", type=int, default=600, help="validation patches the attacker's surrogate detectors are fitted on")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--heldout", action=argparse.BooleanOptionalAction, default=True)
    e.set_defaults(func=_run_sceneproof)


def _print_verdict(verdict) -> None:
    print(verdict.summary())
    print(f"{'y':>4} {'x':>4} {'P(real)':>8} {'A':>8} {'B':>8} {'C':>8}  rejected")
    for p in verdict.patches:
        m = p["detector_margins"]
        print(f"{p['y']:>4} {p['x']:>4} {p['p_real']:>8.3f} {m['A']:>8.3f} {m['B']:>8.3f} {m['C']:>8.3f}  "
              f"{'yes' if p['rejected'] else 'no'}")
    print("(detector margins are relative to the calibrated thresholds: > 0 means the detector fires)")


def _run_sceneproof(args: argparse.Namespace) -> int:
    if args.sceneproof_command == "verify":
        from .sceneproof.verify import EXIT_BAD_INPUT, verify

        try:
            verdict = verify(args.image, args.depth, args.model, args.depth_scale, depth_format=args.depth_format)
        except SafetyNetError as e:  # bad input is exit 3 here, not the global 2 (2 means "rejected")
            print(f"safetynet: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.json:
            print(json.dumps(verdict.to_dict(), indent=1))
        else:
            _print_verdict(verdict)
        return verdict.exit_code
    if args.sceneproof_command == "train":
        from .errors import InputError
        from .sceneproof.train import SceneProofConfig, train_sceneproof

        fields = {f.name: f for f in dataclasses.fields(SceneProofConfig)}
        values = {"out": args.out, "seed": args.seed, "data_dir": args.data_dir, "real": args.real, "threads": args.threads}
        for item in args.set:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in fields:
                raise InputError(f"--set takes KEY=VALUE with KEY one of {', '.join(fields)}; got {item!r}")
            default = fields[key].default
            try:
                if isinstance(default, bool):
                    if raw.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(raw)
                    values[key] = raw.lower() in ("true", "1")
                else:
                    values[key] = type(default)(raw) if isinstance(default, (int, float)) else raw
            except ValueError:
                raise InputError(f"--set {key}= needs a {type(default).__name__}, got {raw!r}") from None
        summary = train_sceneproof(SceneProofConfig(**values))
        print(json.dumps({"out": args.out, "seconds": summary["seconds"],
                          "val_patch_accuracy": summary["classifier"]["val_patch_accuracy"],
                          "frame_validation": summary["frame_validation"]}, indent=1))
        return 0
    from .sceneproof.evaluate import EvaluateConfig, evaluate_sceneproof

    results = evaluate_sceneproof(EvaluateConfig(model=args.model, out=args.out, data_dir=args.data_dir,
                                                 n_attack=args.n_attack, n_fit=args.n_fit, steps=args.steps, seed=args.seed,
                                                 heldout=args.heldout))
    print(json.dumps({"report": str(Path(args.out) / "report.md"), "seconds": results["seconds"]}, indent=1))
    return 0


def _add_robustness(sub: argparse._SubParsersAction) -> None:
    # Defaults are None: RobustnessConfig (safetynet.robustness.run) holds the real ones.
    p = sub.add_parser("robustness", help="attack the detectors (type I/II, adaptive, black box) and write a Table-4 report")
    p.add_argument("--model", default=None, help="classifier checkpoint folder or shipped name (digits: default trains "
                                                 "a tiny one; sceneproof: a bundle folder, default the shipped one)")
    p.add_argument("--dataset", default=None, help="digits (default) | cifar10 | cifar10-sample | sceneproof "
                                                   "(RGB-D patches, depth-only attacks)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (cifar10); the data root holding rgbd/ (sceneproof, "
                                                    "default ../shared/data)")
    p.add_argument("--n", type=int, default=None, help="first N test images are attacked (default 100)")
    p.add_argument("--n-fit", type=int, default=None, help="training images to fit the detectors on (default 600)")
    p.add_argument("--norms", nargs="+", default=None, help="linf and/or l2 (default both)")
    p.add_argument("--eps-linf", type=float, nargs="+", default=None,
                   help="L-inf budgets in [0, 1] pixel units (default digits 0.05 0.1 0.2, CIFAR-10 2/255 4/255 8/255)")
    p.add_argument("--eps-l2", type=float, nargs="+", default=None, help="L2 budgets (default digits 0.5 1 2, CIFAR-10 0.25 0.5 1)")
    p.add_argument("--attacks", nargs="+", default=None,
                   help="rows to run (default all): bim type2 bpda opgd code-matching hsja transfer-fgsm transfer-bim "
                        "finetune-tf subnet-tf")
    p.add_argument("--sharpness", type=float, nargs="+", default=None, help="lambda sweep of the smoothed attack (default 1 10 100)")
    p.add_argument("--gamma-scale", type=float, nargs="+", default=None,
                   help="RBF gamma multipliers, the sigma sweep (default 1 0.1)")
    p.add_argument("--steps", type=int, default=None, help="iterations of the white-box attacks (default 30)")
    p.add_argument("--fit-eps", type=float, default=None, help="BIM-L-inf budget of the detector training adversarials "
                                                                "(default: the middle L-inf budget)")
    p.add_argument("--layers-a", nargs="+", default=None, help="Det A layer(s) (default: see robustness.run.default_layers)")
    p.add_argument("--layers-ensemble", nargs="+", default=None, help="Det ensemble layers (default: the late ReLUs)")
    p.add_argument("--pool", type=int, default=None, help="average-pool conv maps to POOLxPOOL before quantizing "
                                                           "(default 4; 0: all units)")
    p.add_argument("--levels", type=int, default=None, choices=(2, 4), help="2 = binary codes (default), 4 = quaternary")
    p.add_argument("--metzen-epochs", type=int, default=None, help="default 10")
    p.add_argument("--surrogate-model", dest="surrogate_models", nargs="+", default=None,
                   help="checkpoint folder(s) of transfer surrogates; each gets its own transfer rows "
                        "(default: train one)")
    p.add_argument("--surrogate-arch", dest="surrogate_archs", nargs="+", default=None,
                   help="architecture(s) of surrogates to train for the run (default: the target's)")
    p.add_argument("--surrogate-epochs", type=int, default=None, help="default 4")
    p.add_argument("--hsja-queries", type=int, default=None, help="HopSkipJump query budget per image (default 1000)")
    p.add_argument("--hsja-steps", type=int, default=None, help="HopSkipJump iterations (default 40)")
    p.add_argument("--extend-eps", type=int, default=None,
                   help="max doublings of type-II budgets until success is 100%% (default 2)")
    p.add_argument("--target-fpr", type=float, default=None, help="operating point of the TPR table (default 0.05)")
    p.add_argument("--positive-class", type=int, default=None, help="binary tasks: also report the paper's F->T / T->F")
    p.add_argument("--batch-size", type=int, default=None, help="default 250")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--out", default=None, help="output folder for report.md, results.json and figures/ (default runs/robustness)")
    p.set_defaults(func=_run_robustness)


def _run_robustness(args: argparse.Namespace) -> int:
    from .robustness.run import config_from_dict, run_robustness

    cfg = config_from_dict({k: v for k, v in vars(args).items() if k not in ("command", "func", "verbose")})
    if args.pool == 0:
        cfg.pool = None  # all units: None is a real choice here, not "use the default"
    task = None
    if cfg.dataset == "sceneproof":
        from .tasks import load_task

        task = load_task("sceneproof", cfg.model, n=cfg.n, n_fit=cfg.n_fit, seed=cfg.seed, data_dir=cfg.data_dir)
    results = run_robustness(cfg, task=task)
    flags = results["flags"]
    print(json.dumps({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"],
                      "clean_accuracy": results["clean"]["accuracy"],
                      "flags_triggered": sorted({f["name"] for f in flags if f["triggered"]})}, indent=1))
    return 0


def _configure_runtime(args: argparse.Namespace) -> None:
    """The process-wide state a command needs, set here and nowhere in the library: torch threads, global seeds."""
    import numpy as np
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    seed = getattr(args, "seed", None)
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safetynet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_data(sub)
    _add_attack(sub)
    _add_sceneproof(sub)
    _add_robustness(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    _configure_runtime(args)
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
