"""The configuration of ``safetynet robustness``: one dataclass, validated before the run starts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..evaluation.engine import AttackSettings
from ..evaluation.rows import ATTACK_ROWS, NORMS

__all__ = ["DATASETS", "RobustnessConfig"]

DATASETS = ("digits", "cifar10", "cifar10-sample", "sceneproof")


@dataclass
class RobustnessConfig:
    model: str | None = None  # checkpoint folder or shipped name; None: digits trains a tiny SmallCNN, sceneproof the shipped bundle
    dataset: str = "digits"  # digits | cifar10 | cifar10-sample | sceneproof
    data_dir: str | None = None  # CIFAR-10 folder; sceneproof: the data root holding rgbd/ (default ../shared/data)
    n: int = 100  # first n test images, unshuffled, are attacked
    n_fit: int = 600  # training images (seeded subset) to fit the detectors on
    norms: list[str] = field(default_factory=lambda: ["linf", "l2"])
    eps_linf: list[float] | None = None  # None: digits 0.05/0.1/0.2, CIFAR-10 2/4/8 / 255, sceneproof 0.015/0.03/0.06
    eps_l2: list[float] | None = None  # None: digits 0.5/1/2, CIFAR-10 0.25/0.5/1, sceneproof 0.5/1/2
    attacks: list[str] = field(default_factory=lambda: list(ATTACK_ROWS))
    sharpness: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])  # lambda sweep (type2)
    gamma_scale: list[float] = field(default_factory=lambda: [1.0, 0.1])  # RBF gamma multipliers (sigma sweep)
    steps: int = 30  # iterations of the white-box attacks
    fit_eps: float | None = None  # BIM-L∞ budget of the fit adversarials; None: the middle eps_linf
    layers_a: list[str] | None = None  # Det A layer(s); None: see default_layers()
    layers_ensemble: list[str] | None = None  # Det ensemble layers; None: the model's late ReLUs
    pool: int | None = 4  # spatial average pooling of conv maps before quantizing (None: all units)
    levels: int = 2  # 2 = binary codes, 4 = quaternary
    metzen_epochs: int = 10
    surrogate_models: list[str] | None = None  # checkpoints of transfer surrogates; None: train them
    surrogate_archs: list[str] | None = None  # trained surrogates' architectures; None: the target's (another seed)
    surrogate_epochs: int = 4
    hsja_queries: int = 1000  # HopSkipJump query budget per image
    hsja_steps: int = 40
    extend_eps: int = 2  # type-II budgets are doubled up to this many times until success = 100 %
    target_fpr: float = 0.05  # operating point of the TPR column
    positive_class: int | None = None  # binary tasks: also report the paper's F->T / T->F
    headline: dict[str, float] | None = None  # eps per norm for Table 4; None: the middle of each list
    batch_size: int = 250
    seed: int = 0
    threads: int = 1
    out: str = "runs/robustness"

    def eps(self, norm: str, defaults: Mapping[str, Sequence[float]]) -> list[float]:
        """The budgets of ``norm``: the configured list, else the task's ``defaults``."""
        given = self.eps_linf if norm == "linf" else self.eps_l2
        return sorted(float(e) for e in (given if given is not None else defaults[norm]))

    def fit_budget(self, defaults: Mapping[str, Sequence[float]]) -> float:
        """BIM-L∞ budget of the detectors' (and surrogates' own) training adversarials: fit_eps, else the middle L∞ budget."""
        linf = self.eps("linf", defaults)
        return self.fit_eps if self.fit_eps is not None else linf[len(linf) // 2]

    def attack_settings(self, eps: Mapping[str, list[float]]) -> AttackSettings:
        """The engine's settings for budgets ``eps`` (per norm)."""
        return AttackSettings(eps=dict(eps), steps=self.steps, sharpness=list(self.sharpness),
                              gamma_scale=list(self.gamma_scale), hsja_queries=self.hsja_queries,
                              hsja_steps=self.hsja_steps, extend_eps=self.extend_eps, target_fpr=self.target_fpr,
                              batch_size=self.batch_size, seed=self.seed)

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.model is None and self.dataset not in ("digits", "sceneproof"):
            raise InputError(f"give --model (a checkpoint folder) for {self.dataset}; only digits trains its own tiny model")
        for name in ("n", "n_fit", "steps", "metzen_epochs", "surrogate_epochs", "hsja_queries", "hsja_steps",
                     "batch_size", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.n_fit < 20:
            raise InputError(f"n_fit must be >= 20 to fit the detectors, got {self.n_fit}")
        if isinstance(self.extend_eps, bool) or not isinstance(self.extend_eps, int) or self.extend_eps < 0:
            raise InputError(f"extend_eps must be an integer >= 0, got {self.extend_eps!r}")
        bad = [a for a in self.attacks if a not in ATTACK_ROWS]
        if bad or not self.attacks:
            raise InputError(f"unknown attacks {bad}; choose from {', '.join(ATTACK_ROWS)}")
        bad = [m for m in self.norms if m not in NORMS]
        if bad or not self.norms:
            raise InputError(f"norms must be a non-empty subset of {list(NORMS)}, got {self.norms}")
        for norm in self.norms:
            eps = self.eps_linf if norm == "linf" else self.eps_l2
            if eps is not None and (not eps or any(not (math.isfinite(e) and e > 0) for e in eps)):
                raise InputError(f"eps for {norm} must be positive finite numbers, got {eps}")
        for name in ("sharpness", "gamma_scale"):
            v = getattr(self, name)
            if not v or any(not (math.isfinite(e) and e > 0) for e in v):
                raise InputError(f"{name} must be a non-empty list of positive numbers, got {v}")
        if not 0 < self.target_fpr < 1:
            raise InputError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if self.levels not in (2, 4):
            raise InputError(f"levels must be 2 or 4, got {self.levels}")
        if self.surrogate_models is not None and self.surrogate_archs is not None:
            raise InputError("give either surrogate_models (checkpoints) or surrogate_archs (train them), not both")
        for name in ("surrogate_models", "surrogate_archs"):
            v = getattr(self, name)
            if v is not None and (not v or not all(isinstance(e, str) and e for e in v)):
                raise InputError(f"{name} must be a non-empty list of names, got {v!r}")
        if self.dataset == "sceneproof" and self.surrogate_archs is not None:
            raise InputError("sceneproof cannot train surrogates here; give --surrogate-model (or none: the bundle's)")
        if self.surrogate_models is not None:
            for m in self.surrogate_models:
                if not Path(m).is_dir():
                    raise InputError(f"surrogate checkpoint folder {m} does not exist; give a folder written by "
                                     "`safetynet train` (model.safetensors + config.json)")

    def surrogate_specs(self) -> list[tuple[str, str]]:
        """``[(kind, value)]`` per surrogate: ``("model", folder)`` or ``("arch", name)`` (None: the target's)."""
        if self.surrogate_models is not None:
            return [("model", m) for m in self.surrogate_models]
        return [("arch", a) for a in (self.surrogate_archs or [""])]

