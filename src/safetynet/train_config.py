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

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("epochs and batch_size must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr must be a positive finite number, got {self.lr}")
        if not 0 < self.warmup_fraction < 1:
            raise InputError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
