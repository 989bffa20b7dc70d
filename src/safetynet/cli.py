"""The ``safetynet`` command. Each sub-command's flags are generated from its config dataclass
(:mod:`safetynet.cli_config`); every command also takes --threads, --seed and --json."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli_config import HelpFormatter, add_config_flags, config_from_args
from .errors import SafetyNetError
from .exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, describe

DESCRIPTION = ("SafetyNet (Lu et al., ICCV 2017): detect adversarial examples, attack classifier + detector, and "
               "verify RGB-D photos (SceneProof). Every command takes --threads, --seed and --json; "
               "`safetynet COMMAND --help` lists its flags.")

#: Common flags: one meaning and one default on every command. One thread because every
#: committed report was measured at one thread (so its numbers reproduce); --threads 2 is faster.
COMMON_DEFAULTS = {"threads": 1, "seed": 0}


@dataclass(frozen=True)
class Outcome:
    """What a command returns: the ``--json`` document, the exit code and, optionally, its own text."""

    payload: dict[str, Any]
    code: int = EXIT_OK
    text: str | None = None


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("sceneproof", "verify")
    help: str
    config: str  # "module:Class" below safetynet
    run: Callable[[Any], Outcome]

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(f"safetynet.{module}"), name)


# ------------------------------------------------------------------------------------ the jobs
def _train(cfg) -> Outcome:
    from .train import train

    return Outcome(train(cfg))


def _evaluate(cfg) -> Outcome:
    from .train import evaluate_checkpoint

    return Outcome(evaluate_checkpoint(cfg))


def _demo(cfg) -> Outcome:
    from .experiment import run_experiment

    results = run_experiment(cfg)
    return Outcome({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"], "clean": results["clean"],
                    "same_attack_auc": {d: {r["attack"]: round(r["auc"], 4) for r in v["same_attack"]}
                                        for d, v in results["detectors"].items()}})


def _attack(cfg) -> Outcome:
    from .attacks.job import attack_dataset

    return Outcome(attack_dataset(cfg))


def _robustness(cfg) -> Outcome:
    from .robustness.run import run_robustness

    task = None
    if cfg.dataset == "sceneproof":  # the task comes from the bundle; the robustness job never imports sceneproof
        from .tasks import load_task

        task = load_task("sceneproof", cfg.model, n=cfg.n, n_fit=cfg.n_fit, seed=cfg.seed, data_dir=cfg.data_dir)
    results = run_robustness(cfg, task=task)
    return Outcome({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"],
                    "clean_accuracy": results["clean"]["accuracy"],
                    "flags_triggered": sorted({f["name"] for f in results["flags"] if f["triggered"]})})


def _benchmark(cfg) -> Outcome:
    from .benchmark import run_benchmark

    results = run_benchmark(cfg)
    return Outcome({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"],
                    "clean_accuracy": results["clean"]["accuracy"],
                    "flags_triggered": sorted({f["name"] for f in results["flags"] if f["triggered"]}),
                    "consistency_flags": [f"{c['defence']} {c['norm']} {c['detection_eps']:.4g}"
                                          for c in results["consistency"] if c["triggered"]]})


def _data_download(cfg) -> Outcome:
    from .data.download import download

    return Outcome(download(cfg))


def _data_info(cfg) -> Outcome:
    from .data import dataset_info

    return Outcome(dataset_info(cfg))


def _verdict_text(verdict) -> str:
    if not verdict.patches:  # the whole-frame feature model: no patch table
        return verdict.summary()
    lines = [verdict.summary(), f"{'y':>4} {'x':>4} {'P(real)':>8} {'A':>8} {'B':>8} {'C':>8}  rejected"]
    for p in verdict.patches:
        m = p["detector_margins"]
        lines.append(f"{p['y']:>4} {p['x']:>4} {p['p_real']:>8.3f} {m['A']:>8.3f} {m['B']:>8.3f} {m['C']:>8.3f}  "
                     f"{'yes' if p['rejected'] else 'no'}")
    lines.append("(detector margins are relative to the calibrated thresholds: > 0 means the detector fires)")
    return "\n".join(lines)


def _sceneproof_verify(cfg) -> Outcome:
    from .sceneproof.verify import verify

    verdict = verify(cfg.image, cfg.depth, cfg.model, cfg.depth_scale, depth_format=cfg.depth_format)
    return Outcome(verdict.to_dict(), verdict.exit_code, _verdict_text(verdict))


def _sceneproof_train(cfg) -> Outcome:
    from .sceneproof.train import train_sceneproof

    summary = train_sceneproof(cfg)
    return Outcome({"out": cfg.out, "seconds": summary["seconds"],
                    "val_patch_accuracy": summary["classifier"]["val_patch_accuracy"],
                    "frame_validation": summary["frame_validation"]})


def _sceneproof_evaluate(cfg) -> Outcome:
    from .sceneproof.evaluate import evaluate_sceneproof

    results = evaluate_sceneproof(cfg)
    return Outcome({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"]})


def _sceneproof_loso(cfg) -> Outcome:
    from .sceneproof.loso import run_loso

    results = run_loso(cfg)
    summary = results["summary"]
    return Outcome({"report": str(Path(cfg.out) / "report.md"), "seconds": results["seconds"],
                    "real_accepted_mean": {m: s["real_accepted_mean"] for m, s in summary.items()},
                    "caught_mean": {m: s["caught_mean"] for m, s in summary.items()}})


def _sceneproof_fit_features(cfg) -> Outcome:
    from .sceneproof.fit_features import fit_feature_model

    return Outcome(fit_feature_model(cfg))


def _serve(cfg) -> Outcome:
    import importlib.util

    from .errors import InputError

    # fastapi, uvicorn and python-multipart are the optional "serve" extra, not runtime dependencies.
    missing = [m for m in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"safetynet serve needs {', '.join(missing)}; install the serve extra: "
                         "pip install \"safetynet[serve]\"")
    from .serve.server import serve

    return Outcome(serve(cfg))


GROUPS = {"data": "download CIFAR-10 (explicit, needs a network) or describe a data set",
          "sceneproof": "SceneProof: tell real RGB-D captures from fakes (train, evaluate, verify)"}

COMMANDS = (
    Command(("train",), "train a classifier (resumable; one checkpoint per epoch)", "train_config:TrainConfig", _train),
    Command(("evaluate",), "clean test accuracy of a checkpoint (folder or shipped name)", "train_config:AccuracyConfig",
            _evaluate),
    Command(("demo",), "the paper's experiment: attack, fit detectors, evaluate, write a report (offline default)",
            "experiment.config:ExperimentConfig", _demo),
    Command(("data", "download"), "download, verify (md5) and unpack the official CIFAR-10 archive",
            "data.download:DownloadConfig", _data_download),
    Command(("data", "info"), "image counts per class of a data set", "data:DataInfoConfig", _data_info),
    Command(("attack",), "craft type-I adversarial examples for the first N images of a data set",
            "attacks.job:AttackConfig", _attack),
    Command(("sceneproof", "verify"), "judge one RGB-D pair: real (exit 0), fake (1), rejected as adversarial (4), "
            "bad input (3)", "sceneproof.verify:VerifyConfig", _sceneproof_verify),
    Command(("sceneproof", "train"), "train a SceneProof bundle (classifier + detectors) from the shared RGB-D data",
            "sceneproof.train:SceneProofConfig", _sceneproof_train),
    Command(("sceneproof", "evaluate"), "the paper's SceneProof Tables 1-4 and held-out captures: report.md + "
            "results.json", "sceneproof.evaluate_config:EvaluateConfig", _sceneproof_evaluate),
    Command(("sceneproof", "loso"), "leave-one-source-out evaluation of a camera-independent feature model (and the "
            "shipped CNN) on every real source of rgbd/: report.md + results.json",
            "sceneproof.loso_config:LosoConfig", _sceneproof_loso),
    Command(("sceneproof", "fit-features"), "train the sensor-agnostic feature model (verify's default) on all of rgbd/ "
            "and write it without pickle", "sceneproof.loso_config:FitFeaturesConfig", _sceneproof_fit_features),
    Command(("serve",), "SceneProof as an HTTP service + web page (POST /v1/verify, GET /, audit log); "
            "Ctrl-C stops it", "serve.config:ServeConfig", _serve),
    Command(("robustness",), "attack the detectors (type I/II, adaptive, black box) and write a Table-4 report",
            "robustness.config:RobustnessConfig", _robustness),
    Command(("benchmark",), "every detector (SafetyNet, Metzen, confidence, Mahalanobis, LID, KD+BU) under one protocol: "
            "type-I detection, adaptive attacks, flags; report.md + results.json (--quick: offline, minutes)",
            "benchmark.config:BenchmarkConfig", _benchmark),
)


# ------------------------------------------------------------------------------------ the parser
class _Parser(argparse.ArgumentParser):
    """Adds its command's config flags when first used, so ``safetynet --help`` imports no job (nor torch)."""

    def __init__(self, *args: Any, command: Command | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = command

    def ensure_flags(self) -> _Parser:
        if self._pending is not None:
            command, self._pending = self._pending, None
            add_config_flags(self, command.config_class(), skip=COMMON_DEFAULTS)
        return self

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        self.ensure_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.ensure_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self.ensure_flags()
        return super().format_help()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _common_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common flags (every command)")
    g.add_argument("--threads", type=_positive_int, default=COMMON_DEFAULTS["threads"],
                   help="torch threads; 1 because the committed reports were measured at one thread, so their numbers "
                        "reproduce (pass --threads 2 to go faster)")
    g.add_argument("--seed", type=int, default=COMMON_DEFAULTS["seed"],
                   help="seeds torch's and numpy's global generators before the job, and the job's own generators")
    g.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout (default: readable text)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safetynet", description=DESCRIPTION, epilog=describe(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    common = _common_flags()
    subs = {(): parser.add_subparsers(dest="command", required=True, parser_class=_Parser)}
    for cmd in COMMANDS:
        group = cmd.path[:-1]
        if group not in subs:
            p = subs[()].add_parser(group[0], help=GROUPS[group[0]])
            subs[group] = p.add_subparsers(dest=f"{group[0]}_command", required=True, parser_class=_Parser)
        p = subs[group].add_parser(cmd.path[-1], help=cmd.help, description=cmd.help, parents=[common], command=cmd,
                                   formatter_class=HelpFormatter, allow_abbrev=False)  # a typo is no other flag
        p.set_defaults(spec=cmd)
    return parser


def command_parser(*path: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The (flag-complete) parser of one sub-command, e.g. ``command_parser("sceneproof", "verify")``."""
    p = parser or build_parser()
    for name in path:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = action.choices[name]
    return p.ensure_flags() if isinstance(p, _Parser) else p


# ------------------------------------------------------------------------------------ running
def set_global_state(threads: int, seed: int) -> None:
    """The one place safetynet sets global state: torch's thread count and torch's and numpy's seeds."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def _text(value: Any, indent: int = 0) -> list[str]:
    """Readable lines for a JSON-like summary: ``key: value``, nested mappings indented."""
    pad = " " * indent
    lines = []
    for key, v in value.items():
        if isinstance(v, dict) and v:
            lines += [f"{pad}{key}:", *_text(v, indent + 2)]
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            lines.append(f"{pad}{key}:")
            lines += [f"{pad}  - " + ", ".join(f"{k}={_scalar(x)}" for k, x in e.items()) for e in v]
        else:
            lines.append(f"{pad}{key}: {_scalar(v)}")
    return lines


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(map(_scalar, v))
    return "-" if v is None else str(v)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    cmd: Command = args.spec
    try:
        cfg = config_from_args(cmd.config_class(), args)
        set_global_state(args.threads, args.seed)
        outcome = cmd.run(cfg)
    except SafetyNetError as e:
        print(f"safetynet: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("safetynet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(outcome.payload, indent=1))
    else:
        print(outcome.text if outcome.text is not None else "\n".join(_text(outcome.payload)))
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
