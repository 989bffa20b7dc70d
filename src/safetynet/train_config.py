"""The training job's configuration; kept free of torch imports so ``safetynet --help`` is fast."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cli_config import setting
from .errors import InputError


@dataclass
class TrainConfig:
    dataset: str = setting("cifar10", "cifar10 | digits (the embedded cifar10-sample has no training split)")
    data_dir: str | None = setting(None, "CIFAR-10 folder (binary, python or image-folder form)")
    arch: str = setting("resnet20", "resnet20 | resnet32 | vgg | smallcnn")
    epochs: int = setting(30, "training epochs")
    batch_size: int = setting(128, "images per step")
    lr: float = setting(0.2, "one-cycle peak learning rate (SGD, Nesterov momentum)")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "weight decay, not applied to BatchNorm and bias parameters")
    warmup_fraction: float = setting(0.25, "share of steps spent rising to the peak lr")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy")
    augment: bool = setting(True, "random crop (pad 4) + horizontal flip, as batched tensor ops")
    eval_subset: int = setting(2000, "random test images scored after each epoch (all of them after the last)")
    seed: int = setting(0, "seeds the weights and the batch order")
    channels_last: bool = setting(True, "channels-last memory format for images of 16 pixels or more (faster on CPU)")
    out: str = setting("runs/train", "checkpoint folder (model.safetensors + config.json, one per epoch; "
                                     "re-running the same command resumes)")
    init_from: str = setting("", "warm start: a checkpoint folder of the same arch whose weights seed a fresh "
                                 "schedule (a warm restart, as in SGDR); empty: random init")
    # Stochastic weight averaging (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"):
    # the last ``swa_epochs`` epochs run at the constant rate ``swa_lr`` and the weights are averaged
    # ``swa_per_epoch`` times per epoch (evenly spaced, the last at its end); the saved model is that
    # average, with BatchNorm statistics recomputed on the training images. The one-cycle schedule
    # covers the epochs before. 0 = off.
    swa_epochs: int = setting(0, "stochastic weight averaging: the last SWA_EPOCHS epochs run at --swa-lr and the "
                                 "saved model is the average of their weights (BatchNorm recomputed); 0 = off")
    swa_lr: float = setting(0.01, "constant learning rate of the SWA epochs")
    swa_per_epoch: int = setting(1, "weight snapshots averaged per SWA epoch (evenly spaced, the last at its end)")

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


@dataclass
class AccuracyConfig:
    """``safetynet evaluate``: clean test accuracy of a checkpoint (:func:`safetynet.train.evaluate_checkpoint`)."""

    model: str = setting("cifar10-resnet20", "checkpoint folder or shipped model name")
    dataset: str = setting("cifar10-sample", "cifar10-sample | cifar10 | digits")
    data_dir: str | None = setting(None, "CIFAR-10 folder (for --dataset cifar10)")
    n: int | None = setting(None, "first N test images (default: all)")
    seed: int = setting(0, "recorded with the result (evaluation is deterministic)")

    def validate(self) -> None:
        if self.n is not None and self.n < 1:
            raise InputError(f"n must be >= 1, got {self.n}")
