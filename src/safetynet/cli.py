"""Thin command-line wrapper over the typed entry points; ``safetynet --help`` lists the jobs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Sequence

from .errors import SafetyNetError


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train import TrainConfig

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
    from .train import TrainConfig, train

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    metrics = train(cfg)
    print(json.dumps(metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safetynet", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
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
