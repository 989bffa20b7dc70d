"""The configuration of ``safetynet benchmark``: one dataclass, validated before anything runs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import nn

from ..cli_config import setting
from ..errors import InputError

__all__ = ["DETECTORS", "TRAIN_ATTACKS", "TEST_ATTACKS", "ADAPTIVE_ROWS", "BenchmarkConfig", "QUICK"]

#: Detector columns the job can fit itself (a user's own come as fitted Defences, see run_benchmark).
#: "safetynet-narrow" is SafetyNet at the paper's small sigma (gamma fixed, see ``narrow_gamma``), next to
#: the cross-validated (wide) kernel of "safetynet".
DETECTORS = ("safetynet", "safetynet-narrow", "metzen", "confidence", "mahalanobis", "lid", "kdbu")
#: Type-I attacks a detector can be trained on, and those it is tested on (CW-L2 and Square: never trained on).
TRAIN_ATTACKS = ("fgsm", "bim", "pgd", "deepfool")
TEST_ATTACKS = ("fgsm", "bim", "pgd", "deepfool", "cw-l2", "square")
#: Adaptive (type-II) rows of the engine: the paper's smoothed attack (joint PGD through the exact score for
#: differentiable detectors), BPDA (joint PGD with a hinge, straight-through SafetyNet's quantizer) and orthogonal PGD.
ADAPTIVE_ROWS = ("type2", "bpda", "opgd")

#: What --quick changes: small n, few steps, offline on the embedded sample (under 10 minutes at one thread).
QUICK = {"dataset": "cifar10-sample", "n": 40, "n_fit": 360, "train_attacks": ["fgsm", "bim"],
         "test_attacks": ["fgsm", "bim", "deepfool", "cw-l2", "square"], "steps": 10, "cw_steps": 30,
         "cw_search": 3, "square_queries": 100, "deepfool_steps": 20, "sharpness": [10.0], "gamma_scale": [0.1],
         "metzen_epochs": 3, "mc_samples": 20}


@dataclass
class BenchmarkConfig:
    model: str | nn.Module | None = setting(None, "classifier: an nn.Module (Python), a checkpoint folder or a shipped "
                                                  "name (default: cifar10-resnet20; digits: a SmallCNN trained for the run)")
    dataset: str = setting("cifar10", "cifar10 (the shared JPEG copy, --data-dir) | cifar10-sample (embedded, offline) "
                                      "| digits")
    data_dir: str | None = setting(None, "CIFAR-10 folder for --dataset cifar10")
    quick: bool = setting(False, "small offline run on the embedded cifar10-sample: n=40, few steps, two training "
                                 "attacks (under 10 minutes at one thread); overrides those settings")
    n: int = setting(500, "the first N test images, unshuffled, are attacked")
    n_adaptive: int = setting(100, "the first N of those also face the adaptive attacks (every detector x row x "
                                   "budget: the costly part; published adaptive evaluations use 100-1,000 images)")
    n_fit: int = setting(2000, "training images (seeded subset) to fit and calibrate the detectors on")
    calibration: float = setting(0.2, "share of the natural fit images held out to set each threshold")
    target_fpr: float = setting(0.05, "false-positive rate on held-out clean images that sets every threshold")
    detectors: list[str] = setting(help="detector columns: " + " ".join(DETECTORS), factory=lambda: list(DETECTORS))
    train_attacks: list[str] = setting(help="type-I attacks the detectors are trained on, one fit each: "
                                            + " ".join(TRAIN_ATTACKS), factory=lambda: ["fgsm", "bim", "deepfool"])
    test_attacks: list[str] = setting(help="type-I attacks the detectors are tested on: " + " ".join(TEST_ATTACKS),
                                      factory=lambda: list(TEST_ATTACKS))
    adaptive_train_attack: str | None = setting(None, "training attack of the detectors that face the adaptive attacks "
                                                      "(default: bim if trained on, else the first)")
    type1_eps: float = setting(8 / 255, "L-inf budget of the type-I FGSM/BIM/PGD/Square (DeepFool, CW-L2: unbounded)")
    eps_linf: list[float] = setting(help="adaptive L-inf budgets", factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255])
    eps_l2: list[float] = setting(help="adaptive L2 budgets", factory=lambda: [0.25, 0.5, 1.0])
    norms: list[str] = setting(help="linf and/or l2 (adaptive curves)", factory=lambda: ["linf", "l2"])
    adaptive: list[str] = setting(help="adaptive rows: " + " ".join(ADAPTIVE_ROWS), factory=lambda: list(ADAPTIVE_ROWS))
    steps: int = setting(50, "iterations of BIM/PGD and of the adaptive attacks")
    sharpness: list[float] = setting(help="lambda sweep of the smoothed attack on SafetyNet", factory=lambda: [1.0, 10.0, 100.0])
    gamma_scale: list[float] = setting(help="RBF gamma multipliers (sigma sweep) on SafetyNet", factory=lambda: [1.0, 0.1])
    cw_steps: int = setting(200, "Adam steps per binary-search round of CW-L2")
    cw_search: int = setting(5, "binary-search rounds over c of CW-L2")
    square_queries: int = setting(1000, "query budget of Square per image")
    deepfool_steps: int = setting(50, "iterations of DeepFool")
    narrow_gamma: float = setting(64.0, "the safetynet-narrow column's RBF gamma, in units of 1 / median squared "
                                        "code distance (the paper's small sigma; the robustness job's --narrow-gamma)")
    metzen_epochs: int = setting(10, "training epochs of the Metzen et al. subnetwork")
    mc_samples: int = setting(50, "Monte-Carlo dropout passes of KD+BU")
    batch_size: int = setting(250, "images per forward pass")
    seed: int = setting(0, "seeds the fit subset, the split, the attacks and the detectors")
    out: str = setting("runs/benchmark", "output folder for report.md, results.json and figures/")
    cache: str | None = setting(None, "folder of finished attacks (type-I crafts and adaptive cells, one file each) "
                                      "(default: OUT/cache); an interrupted run resumes from it")

    def __post_init__(self) -> None:
        if self.quick:
            defaults = {f.name: f for f in dataclasses.fields(self)}
            for name, value in QUICK.items():
                # --quick sets what the user left at its default; explicit flags still win
                f = defaults[name]
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                if getattr(self, name) == default:
                    setattr(self, name, list(value) if isinstance(value, list) else value)
        if self.adaptive_train_attack is None and self.train_attacks:
            self.adaptive_train_attack = "bim" if "bim" in self.train_attacks else self.train_attacks[0]

    def validate(self) -> None:
        if self.dataset not in ("cifar10", "cifar10-sample", "digits"):
            raise InputError(f"dataset must be cifar10, cifar10-sample or digits, got {self.dataset!r}")
        for name in ("n", "n_adaptive", "n_fit", "steps", "cw_steps", "cw_search", "square_queries", "deepfool_steps",
                     "metzen_epochs", "mc_samples", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.mc_samples < 2:
            raise InputError(f"mc_samples must be >= 2 (a variance over passes), got {self.mc_samples}")
        if not 0 < self.calibration < 1:
            raise InputError(f"calibration must be a share in (0, 1), e.g. 0.2, got {self.calibration}")
        if not 0 < self.target_fpr < 1:
            raise InputError(f"target_fpr must be in (0, 1), e.g. 0.05, got {self.target_fpr}")
        for name, allowed in (("detectors", DETECTORS), ("train_attacks", TRAIN_ATTACKS),
                              ("test_attacks", TEST_ATTACKS), ("adaptive", ADAPTIVE_ROWS), ("norms", ("linf", "l2"))):
            v = getattr(self, name)
            bad = [a for a in v if a not in allowed]
            if bad or len(set(v)) != len(v):
                raise InputError(f"{name} must be distinct names from {', '.join(allowed)}; got {' '.join(map(str, v))}")
        if not self.train_attacks:
            raise InputError("train_attacks is empty; give at least one attack to train the detectors on")
        if self.adaptive_train_attack not in self.train_attacks:
            raise InputError(f"adaptive_train_attack {self.adaptive_train_attack!r} is not among train_attacks "
                             f"({' '.join(self.train_attacks)})")
        if not (isinstance(self.narrow_gamma, (int, float)) and math.isfinite(self.narrow_gamma) and self.narrow_gamma > 0):
            raise InputError(f"narrow_gamma must be a positive multiple (e.g. 64), got {self.narrow_gamma!r}")
        for name in ("type1_eps",):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1):
                raise InputError(f"{name} must be in (0, 1] (pixel units, e.g. 0.0314 for 8/255), got {v!r}")
        for name in ("eps_linf", "eps_l2", "sharpness", "gamma_scale"):
            v = getattr(self, name)
            if not v or any(not (isinstance(e, (int, float)) and math.isfinite(e) and e > 0) for e in v):
                raise InputError(f"{name} must be a non-empty list of positive numbers, got {v}")
        if any(e > 1 for e in self.eps_linf):
            raise InputError(f"eps_linf is in pixel units in (0, 1] (8/255 = 0.0314), got {self.eps_linf}")
        if self.dataset == "cifar10-sample" and self.n + self.n_fit > 1000:
            raise InputError(f"n + n_fit = {self.n + self.n_fit} exceeds the 1000 images of the embedded sample; "
                             "lower --n or --n-fit")
