"""The configuration of the paper's type-I experiment (``safetynet demo``): attack grid and settings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ..cli_config import POOL_HELP, pool_size, setting
from ..errors import InputError

__all__ = ["DETECTORS", "DETECTOR_TITLES", "AttackSetting", "ExperimentConfig", "attack_grid"]

DETECTORS = ("svm-binary", "svm-quaternary", "svm-pooled", "metzen")
DETECTOR_TITLES = {"svm-binary": "SafetyNet (binary codes)", "svm-quaternary": "SafetyNet (quaternary codes)",
                   "svm-pooled": "SafetyNet (quaternary codes, pooled)",
                   "metzen": "Metzen et al. subnetwork", "confidence": "Confidence (max softmax)"}


@dataclass(frozen=True)
class AttackSetting:
    """One point of the attack grid: an attack, its budget and hyperparameters."""

    key: str  # short id used in file names and JSON, e.g. "fgsm-8"
    label: str  # human-readable, e.g. "FGSM ε=8/255"
    family: str  # FGSM | BIM-Linf | BIM-L2 | DeepFool-L2 | DeepFool-top5
    attack: str  # name in safetynet.attacks.ATTACKS
    eps: float | None = None
    params: tuple[tuple[str, Any], ...] = ()
    top_k: int | None = None  # DeepFool-top-k: the label must leave the original top-k

    def build(self):
        from ..attacks import make_attack

        return make_attack(self.attack, **dict(self.params))


def attack_grid(name: str) -> tuple[AttackSetting, ...]:
    """``demo``: one setting per attack family (fits the 5-minute demo); ``paper``: several ε each."""
    if name == "demo":
        return (
            AttackSetting("fgsm-8", "FGSM ε=8/255", "FGSM", "fgsm", 8 / 255),
            AttackSetting("bim-linf-4", "BIM-L∞ ε=4/255", "BIM-Linf", "bim", 4 / 255, (("steps", 5), ("step_size", 1.5 / 255))),
            AttackSetting("bim-l2-0.5", "BIM-L2 ε=0.5", "BIM-L2", "bim-l2", 0.5, (("steps", 5),)),
            AttackSetting("deepfool-l2", "DeepFool-L2", "DeepFool-L2", "deepfool", None, (("steps", 50), ("overshoot", 0.02))),
            AttackSetting("deepfool-top5", "DeepFool-top-5", "DeepFool-top5", "deepfool", None,
                          (("steps", 50), ("overshoot", 0.02)), top_k=5),
        )
    if name == "paper":
        return (
            AttackSetting("fgsm-2", "FGSM ε=2/255", "FGSM", "fgsm", 2 / 255),
            AttackSetting("fgsm-4", "FGSM ε=4/255", "FGSM", "fgsm", 4 / 255),
            AttackSetting("fgsm-8", "FGSM ε=8/255", "FGSM", "fgsm", 8 / 255),
            AttackSetting("bim-linf-2", "BIM-L∞ ε=2/255", "BIM-Linf", "bim", 2 / 255, (("steps", 10), ("step_size", 0.5 / 255))),
            AttackSetting("bim-linf-4", "BIM-L∞ ε=4/255", "BIM-Linf", "bim", 4 / 255, (("steps", 10), ("step_size", 1 / 255))),
            AttackSetting("bim-linf-8", "BIM-L∞ ε=8/255", "BIM-Linf", "bim", 8 / 255, (("steps", 10), ("step_size", 2 / 255))),
            AttackSetting("bim-l2-0.25", "BIM-L2 ε=0.25", "BIM-L2", "bim-l2", 0.25, (("steps", 10),)),
            AttackSetting("bim-l2-0.5", "BIM-L2 ε=0.5", "BIM-L2", "bim-l2", 0.5, (("steps", 10),)),
            AttackSetting("bim-l2-1", "BIM-L2 ε=1.0", "BIM-L2", "bim-l2", 1.0, (("steps", 10),)),
            AttackSetting("deepfool-l2", "DeepFool-L2", "DeepFool-L2", "deepfool", None, (("steps", 50), ("overshoot", 0.02))),
            AttackSetting("deepfool-top5", "DeepFool-top-5", "DeepFool-top5", "deepfool", None,
                          (("steps", 50), ("overshoot", 0.02)), top_k=5),
        )
    if name in ("imagenet", "imagenet-quick"):
        # Figure 2 D-F on ImageNet (EfficientNet-Lite0 at 224x224): one setting per attack family.
        # L2 budgets are larger than CIFAR-10's because a 224x224x3 image has 49 times the
        # elements of a 32x32x3 one. DeepFool considers the 10 most likely allowed classes of the
        # clean image at each step (10 backward passes a step instead of 1,000; see
        # safetynet.attacks.DeepFool). "imagenet-quick" (the CI size, --quick: minutes on one
        # thread) takes 3 BIM steps and 3 DeepFool candidates.
        quick = name == "imagenet-quick"
        steps, cand = (3, 3) if quick else (10, 10)
        df = (("steps", 50), ("overshoot", 0.02), ("candidates", cand))
        return (
            AttackSetting("fgsm-2", "FGSM ε=2/255", "FGSM", "fgsm", 2 / 255),
            AttackSetting("bim-linf-2", "BIM-L∞ ε=2/255", "BIM-Linf", "bim", 2 / 255,
                          (("steps", steps), ("step_size", 2.5 / 255 / steps))),
            AttackSetting("bim-l2-1", "BIM-L2 ε=1.0", "BIM-L2", "bim-l2", 1.0, (("steps", steps),)),
            AttackSetting("deepfool-l2", "DeepFool-L2", "DeepFool-L2", "deepfool", None, df),
            AttackSetting("deepfool-top5", "DeepFool-top-5", "DeepFool-top5", "deepfool", None, df, top_k=5),
        )
    if name == "scale":  # Figure 2's CIFAR-10 panels at the paper's scale: the settings of issue 11's targets
        return (
            AttackSetting("fgsm-8", "FGSM ε=8/255", "FGSM", "fgsm", 8 / 255),
            AttackSetting("bim-linf-4", "BIM-L∞ ε=4/255", "BIM-Linf", "bim", 4 / 255, (("steps", 10), ("step_size", 1 / 255))),
            AttackSetting("bim-linf-8", "BIM-L∞ ε=8/255", "BIM-Linf", "bim", 8 / 255, (("steps", 10), ("step_size", 2 / 255))),
            AttackSetting("bim-l2-0.5", "BIM-L2 ε=0.5", "BIM-L2", "bim-l2", 0.5, (("steps", 10),)),
            AttackSetting("deepfool-l2", "DeepFool-L2", "DeepFool-L2", "deepfool", None, (("steps", 50), ("overshoot", 0.02))),
        )
    raise InputError(f"unknown attack grid {name!r}; choose 'demo', 'paper', 'scale', 'imagenet' or 'imagenet-quick'")


@dataclass
class ExperimentConfig:
    dataset: str = setting("cifar10-sample", "cifar10-sample (embedded, offline) | cifar10 (needs --data-dir) | "
                                             "digits (tests) | imagenet-val (needs --data-dir, --model "
                                             "imagenet-efficientnet-lite0 and --layer pool)")
    data_dir: str | None = setting(None, "CIFAR-10 folder (binary, python or image-folder form), or an ImageNet "
                                         "folder with labels.csv (e.g. ../shared/data/imagenet-val-1300)")
    model: str | nn.Module = setting("cifar10-resnet20", "shipped model name or checkpoint folder (from Python also an nn.Module)")
    layer: str = setting("layer3.2.relu", "layer to tap; the default is ResNet-20's last residual stage, the paper's x5")
    # The paper taps the whole layer (64x8x8 = 4096 units for ResNet-20's last stage).
    pool: int | None = setting(None, POOL_HELP + " (default: all units, as the paper taps the whole layer)")
    # The "svm-pooled" detector: quaternary codes of the tapped maps average-pooled to
    # pooled x pooled per channel. With a few thousand training examples the 4,096-unit codes are
    # data-starved; on a validation split of CIFAR-10 *training* images (ResNet-20, 1,400 natural +
    # 1,400 adversarial) global pooling raised AUC from 0.76 to 0.82 (BIM-L∞ 4/255) and from 0.60
    # to 0.73 (DeepFool-L2). Not in the paper: reported beside its full codes.
    pooled: int = setting(1, "the extra 'svm-pooled' detector quantizes each channel average-pooled to "
                             "POOLEDxPOOLED (not in the paper; reported beside the full codes)")
    n_train: int | None = setting(None, "clean images attacked to train the detectors (default: half the sample / "
                                        "2000; imagenet-val 800, 60 with --quick)")
    n_test: int | None = setting(None, "clean images attacked to test them (default: the other half / 1000; "
                                       "imagenet-val 500, 40 with --quick)")
    grid: Literal["demo", "paper", "scale", "imagenet", "imagenet-quick"] | None = setting(
        None, "attack grid: demo (one setting per attack), paper (several eps), scale (the five settings of "
              "Figure 2 at full scale), imagenet (Figure 2 D-F at 224x224) or imagenet-quick (its CI size); "
              "default demo, paper for cifar10, imagenet for imagenet-val (imagenet-quick with --quick)")
    # The CI-sized ImageNet run: 100 images and the imagenet-quick grid, minutes on one thread.
    quick: bool = setting(False, "imagenet-val: 60 + 40 images and the imagenet-quick grid unless given")
    metzen_epochs: int = setting(10, "training epochs of the Metzen et al. subnetwork")
    train_attack: str | None = setting(None, "attack highlighted in the report (the paper's Figure 2C trains on "
                                             "L-inf; default BIM-L-inf)")
    # Operating point (Tramer et al. 2020; Bryniarski et al. 2022): thresholds are set on natural
    # training images the detectors never saw, at a chosen false-positive rate; reports give these
    # numbers next to the SVM's own zero threshold.
    fpr: float = setting(0.05, "false-positive rate at which every detector's threshold is calibrated")
    calibration: float = setting(0.2, "share of the natural detector-training images held out to calibrate "
                                      "thresholds (never fitted on)")
    gamma: float | None = setting(None, "RBF gamma = 1/(2 sigma^2) of the SVMs (default: cross-validated)")
    sigma: float | None = setting(None, "the paper's sigma, instead of --gamma (default: cross-validated)")
    C: float | None = setting(None, "SVM regularisation (default: cross-validated)", flag="--C")
    solver: Literal["auto", "exact", "nystroem"] = setting(
        "auto", "SVM solver: exact, nystroem (Williams & Seeger 2001 features + a linear SVM, folded back into an RBF "
                "expansion over the landmarks) or auto (exact up to 8,000 codes)")
    n_components: int = setting(4096, "Nyström landmarks (memory ~24 x training codes x landmarks bytes)")
    metzen_max_train: int = setting(20000, "at most this many natural and as many adversarial examples train the "
                                           "Metzen subnetwork (its input maps are the only uncompressed data kept)")
    chunk_size: int | None = setting(None, "images per unit of work (a unit is cached on disk when it finishes; "
                                           "default 500, 100 for imagenet-val)")
    cache: str | None = setting(None, "folder of cached attack/code units, shared between runs "
                                      "(default: OUT/cache); an interrupted run resumes from it")
    workers: int = setting(1, "parallel workers (local processes, or Ray tasks with --ray)")
    ray: bool = setting(False, "run the units on Ray (a local instance; pip install ray)")
    ray_address: str | None = setting(None, "run on an existing Ray cluster (e.g. auto or ray://host:10001)")
    device: str = setting("auto", "auto (a GPU when present) | cpu | cuda")
    size_curve: list[int] | None = setting(None, "also fit the binary-code SVM on the first N natural + N adversarial "
                                                 "training examples for each N and report detection vs N")
    size_curve_attacks: list[str] = setting(help="attack settings of the size curve (keys, e.g. bim-linf-4)",
                                            factory=lambda: ["bim-linf-4", "deepfool-l2"])
    # An attack's backward graph of a 224x224 EfficientNet image takes tens of MB: 250 of them
    # would need >10 GB and spend much of the time in page faults (measured: 7 GB RSS for 40 images).
    batch_size: int | None = setting(None, "images per forward pass (default 250, 16 for imagenet-val)")
    seed: int = setting(0, "seeds the split and the detectors")
    out: str = setting("safetynet-demo", "output folder for report.md, results.json and figures/")

    def __post_init__(self) -> None:
        if self.grid is None:
            if self.dataset == "imagenet-val":
                self.grid = "imagenet-quick" if self.quick else "imagenet"
            else:
                self.grid = "paper" if self.dataset == "cifar10" else "demo"
        imagenet = self.dataset == "imagenet-val"
        if self.batch_size is None:
            self.batch_size = 16 if imagenet else 250
        if self.chunk_size is None:
            self.chunk_size = 100 if imagenet else 500
        self.pool = pool_size(self.pool)

    def validate(self) -> None:
        if self.quick and self.dataset != "imagenet-val":
            raise InputError(f"--quick sizes the imagenet-val run; for {self.dataset} give --n-train/--n-test")
        if self.dataset == "imagenet-val" and isinstance(self.model, str) and self.model.startswith("cifar10-"):
            raise InputError(f"--model {self.model} is a CIFAR-10 classifier; imagenet-val needs an ImageNet one, "
                             "e.g. --model imagenet-efficientnet-lite0 --layer pool")
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 20):
                raise InputError(f"{name} must be an integer >= 20, got {v!r}")
        if isinstance(self.pooled, bool) or not isinstance(self.pooled, int) or self.pooled < 1:
            raise InputError(f"pooled must be a positive integer (pooled x pooled per channel), got {self.pooled!r}")
        if self.metzen_epochs < 1:
            raise InputError(f"metzen_epochs must be >= 1, got {self.metzen_epochs}")
        if not 0 < self.fpr < 1:
            raise InputError(f"fpr must be in (0, 1), e.g. 0.05, got {self.fpr}")
        if not 0 < self.calibration < 1:
            raise InputError(f"calibration must be a share in (0, 1), e.g. 0.2, got {self.calibration}")
        if self.gamma is not None and self.sigma is not None:
            raise InputError("give --gamma or --sigma, not both (gamma = 1 / (2 sigma^2))")
        for name in ("gamma", "sigma", "C"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, got {v!r}")
        for name in ("metzen_max_train", "chunk_size", "workers", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.size_curve is not None and (not self.size_curve or any(
                isinstance(n, bool) or not isinstance(n, int) or n < 10 for n in self.size_curve)):
            raise InputError(f"size_curve must be a list of integers >= 10 (examples per class), got {self.size_curve!r}")
        keys = {s.key for s in attack_grid(self.grid)}
        if self.size_curve is not None and not set(self.size_curve_attacks) <= keys:
            raise InputError(f"size_curve_attacks {sorted(set(self.size_curve_attacks) - keys)} are not in the "
                             f"{self.grid} grid; choose from {', '.join(sorted(keys))}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise InputError("device cuda asked for, but torch sees no GPU; use --device cpu (or auto)")

    def resolved_device(self) -> str:
        """``auto``: a GPU when torch sees one, else the CPU."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def svm_params(self, levels: int) -> dict[str, Any]:
        """Constructor arguments of the code SVMs (gamma/sigma/C None: cross-validated)."""
        return {"levels": levels, "gamma": self.gamma, "sigma": self.sigma, "C": self.C, "random_state": self.seed,
                "solver": self.solver, "n_components": self.n_components}

