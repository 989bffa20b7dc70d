"""The training job's configuration; kept free of torch imports so ``safetynet --help`` is fast."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError


@dataclass
class TrainConfig:
    dataset: str = "cifar10"  # cifar10 | digits
    data_dir: str | None = None  # CIFAR-10 folder (binary, python or image-folder form)
    arch: str = "resnet20"  # resnet20 | resnet32 | vgg | smallcnn
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.2  # one-cycle peak learning rate (SGD, Nesterov momentum)
    momentum: float = 0.9
    weight_decay: float = 5e-4  # not applied to BatchNorm and bias parameters
    warmup_fraction: float = 0.25  # share of steps spent rising to the peak lr
    label_smoothing: float = 0.0
    augment: bool = True  # random crop (pad 4) + horizontal flip, as batched tensor ops
    eval_subset: int = 2000  # random test images scored after each epoch (all of them after the last)
    seed: int = 0
    threads: int = 1  # torch threads; 1 leaves the other core free (see README)
    channels_last: bool = True
    out: str = "runs/train"
    # Warm start: a checkpoint folder (same arch) whose weights seed a fresh schedule, e.g. a second,
    # shorter one-cycle run after the first (a warm restart, as in SGDR). Empty string = random init.
    init_from: str = ""
    # Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"):
    # the last ``swa_epochs`` epochs run at the constant rate ``swa_lr`` and the weights are averaged
    # ``swa_per_epoch`` times per epoch (evenly spaced, the last at its end); the saved model is that
    # average, with BatchNorm statistics recomputed on the training images. The one-cycle schedule
    # covers the epochs before. 0 = off.
    swa_epochs: int = 0
    swa_lr: float = 0.01
    swa_per_epoch: int = 1

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if not 0 < self.warmup_fraction < 1:
            raise InputError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
        if not 0 <= self.swa_epochs <= self.epochs:
            raise InputError(f"swa_epochs must be between 0 and epochs ({self.epochs}), got {self.swa_epochs}")
        if self.swa_epochs and not (self.swa_lr > 0 and math.isfinite(self.swa_lr)):
            raise InputError(f"swa_lr must be a positive finite number, got {self.swa_lr}")
        if self.swa_per_epoch < 1:
            raise InputError(f"swa_per_epoch must be >= 1, got {self.swa_per_epoch}")
