"""The configuration of ``safetynet robustness``: one dataclass, validated before the run starts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..cli_config import POOL_HELP, pool_size, setting
from ..errors import InputError
from ..evaluation.engine import AttackSettings
from ..evaluation.rows import ATTACK_ROWS, NORMS, TRANSFER_ROWS

__all__ = ["DATASETS", "DEFAULT_MODELS", "RobustnessConfig"]

DATASETS = ("digits", "cifar10", "cifar10-sample", "sceneproof")


#: The classifier attacked when ``model`` is None: the shipped ResNet-20 for CIFAR-10 (full or sample);
#: digits train a tiny SmallCNN for the run and sceneproof uses the shipped bundle.
DEFAULT_MODELS = {"cifar10": "cifar10-resnet20", "cifar10-sample": "cifar10-resnet20"}


@dataclass
class RobustnessConfig:
    model: str | nn.Module | None = setting(None, "classifier (an nn.Module from Python), checkpoint folder or shipped name (default: the shipped cifar10-resnet20 "
                                      "for cifar10 and cifar10-sample; digits trains a tiny SmallCNN for the run; "
                                      "sceneproof: a bundle folder, default the shipped one)")
    dataset: str = setting("cifar10-sample", "cifar10-sample (embedded, offline) | cifar10 | digits | sceneproof "
                                             "(RGB-D patches, depth-only attacks)")
    data_dir: str | None = setting(None, "CIFAR-10 folder (cifar10); sceneproof: the data root holding rgbd/ "
                                         "(default $SAFETYNET_DATA or ../shared/data)")
    n: int = setting(100, "the first N test images, unshuffled, are attacked")
    n_fit: int = setting(600, "training images (seeded subset) to fit the detectors on")
    norms: list[str] = setting(help="linf and/or l2", factory=lambda: ["linf", "l2"])
    eps_linf: list[float] | None = setting(None, "L-inf budgets in [0, 1] pixel units (default digits 0.05 0.1 0.2, "
                                                 "CIFAR-10 2/255 4/255 8/255, sceneproof 0.015 0.03 0.06)")
    eps_l2: list[float] | None = setting(None, "L2 budgets (default digits 0.5 1 2, CIFAR-10 0.25 0.5 1, "
                                               "sceneproof 0.5 1 2)")
    attacks: list[str] | None = setting(None, "rows to run: " + " ".join(ATTACK_ROWS) + " (default: all; on "
                                              "cifar10-sample, which has no training split to train a surrogate on, "
                                              "the transfer rows only with --surrogate-model)")
    sharpness: list[float] = setting(help="lambda sweep of the smoothed type-II attack", factory=lambda: [1.0, 10.0, 100.0])
    gamma_scale: list[float] = setting(help="RBF gamma multipliers (the sigma sweep)", factory=lambda: [1.0, 0.1])
    steps: int = setting(30, "iterations of the white-box attacks")
    fit_eps: float | None = setting(None, "BIM-L-inf budget of the detector training adversarials "
                                          "(default: the middle L-inf budget)")
    layers_a: list[str] | None = setting(None, "Det A layer(s) (default: see robustness.run.default_layers)")
    layers_ensemble: list[str] | None = setting(None, "Det ensemble layers (default: the model's late ReLUs)")
    # Pooling 4x4 keeps the ensemble's codes (three late layers) small enough for 600 fit images;
    # the committed robustness reports were measured with it. Its own flag name, because demo's
    # --pool defaults to all units (the paper's whole layer).
    pool: int | None = setting(4, POOL_HELP, flag="--detector-pool")
    levels: int = setting(2, "2 = binary codes, 4 = quaternary", choices=(2, 4))
    metzen_epochs: int = setting(10, "training epochs of the Metzen et al. subnetwork (Subnet Det)")
    surrogate_models: list[str] | None = setting(None, "checkpoint folder(s) of transfer surrogates; each gets its own "
                                                       "transfer rows (default: train one)", flag="--surrogate-model")
    surrogate_archs: list[str] | None = setting(None, "architecture(s) of surrogates to train for the run (default: "
                                                      "the target's, another seed)", flag="--surrogate-arch")
    surrogate_epochs: int = setting(4, "training epochs of a surrogate trained for the run")
    hsja_queries: int = setting(1000, "HopSkipJump query budget per image")
    hsja_steps: int = setting(40, "HopSkipJump iterations")
    extend_eps: int = setting(2, "type-II budgets are doubled up to this many times until success is 100 %")
    target_fpr: float = setting(0.05, "operating point: detector thresholds are calibrated at this false-positive "
                                      "rate on held-out natural fit images (and the TPR table reads it)")
    calibrate: bool = setting(True, "calibrate the fitted detectors' thresholds at --target-fpr (--no-calibrate: "
                                    "the SVM's zero and the subnetwork's logit 0)")
    calibration: float = setting(0.2, "share of the natural fit images held out to calibrate thresholds")
    gamma: float | None = setting(None, "RBF gamma of the SafetyNet SVMs (default: cross-validated)")
    sigma: float | None = setting(None, "the paper's sigma, instead of --gamma (default: cross-validated)")
    C: float | None = setting(None, "SVM regularisation (default: cross-validated)", flag="--C")
    solver: str = setting("auto", "SVM solver: exact, nystroem or auto (exact up to 8,000 codes)",
                          choices=("auto", "exact", "nystroem"))
    narrow_gamma: float | None = setting(64.0, "adds the column 'Det A (narrow σ)': Det A with gamma = NARROW_GAMMA / "
                                               "median squared code distance, the paper's small σ (--narrow-gamma 0: "
                                               "leave it out)")
    positive_class: int | None = setting(None, "binary tasks: also report the paper's F->T / T->F with this class as "
                                               "'true' (sceneproof: real)")
    headline: dict[str, float] | None = setting(None, "eps per norm for Table 4 as JSON, e.g. '{\"linf\": 0.0314}' "
                                                      "(default: the middle of each list)")
    batch_size: int = setting(250, "images per forward pass")
    seed: int = setting(0, "seeds the fit subset, the attacks and the detectors")
    out: str = setting("runs/robustness", "output folder for report.md, results.json and figures/")
    cache: str | None = setting(None, "folder of finished attack cells, one file per (row, norm, eps) (default: "
                                      "OUT/cache); an interrupted run resumes from it")

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = DEFAULT_MODELS.get(self.dataset)
        self.pool = pool_size(self.pool)
        if self.attacks is None:
            no_surrogate = self.dataset == "cifar10-sample" and self.surrogate_models is None
            self.attacks = [a for a in ATTACK_ROWS if not (no_surrogate and a in TRANSFER_ROWS)]

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
        for name in ("n", "n_fit", "steps", "metzen_epochs", "surrogate_epochs", "hsja_queries", "hsja_steps",
                     "batch_size"):
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
        transfer = [a for a in self.attacks if a in TRANSFER_ROWS]
        if transfer and self.dataset == "cifar10-sample" and self.surrogate_models is None:
            raise InputError(f"the embedded CIFAR-10 sample has no training split for a surrogate; give --surrogate-model "
                             f"or drop the transfer attacks ({' '.join(transfer)})")
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
        if not 0 < self.calibration < 1:
            raise InputError(f"calibration must be a share in (0, 1), e.g. 0.2, got {self.calibration}")
        if self.gamma is not None and self.sigma is not None:
            raise InputError("give --gamma or --sigma, not both (gamma = 1 / (2 sigma^2))")
        if self.narrow_gamma is not None and not (math.isfinite(self.narrow_gamma) and self.narrow_gamma >= 0):
            raise InputError(f"narrow_gamma must be a positive multiple (e.g. 64) or 0 to leave the column out, "
                             f"got {self.narrow_gamma}")
        if self.narrow_gamma == 0:
            self.narrow_gamma = None
        for name in ("gamma", "sigma", "C"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, got {v!r}")
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

