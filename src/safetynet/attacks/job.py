"""``safetynet attack``: attack the first N images of a data set with a saved classifier.

The typed entry point is :func:`attack_dataset`; the CLI only builds an :class:`AttackConfig`.
Results go to one ``.npz`` (written atomically, loadable with ``allow_pickle=False``):

=====================  ===============  ===================================================
key                    shape / dtype    meaning
=====================  ===============  ===================================================
``adversarial``        (K, N, C, H, W)  clipped adversarials, float32 in [0, 1], one per eps
``eps``                (K,) float64     budgets (``inf``: DeepFool without a budget)
``index``              (N,) int64       positions of the attacked images in the split
``labels``             (N,) int64       true labels
``targets``            (N,) int64       target classes (targeted runs only)
``clean_predictions``  (N,) int64       top-1 on the clean images
``predictions``        (K, N) int64     top-1 on the adversarials
``clean_success``      (N,) bool        the criterion already held on the clean image
``success``            (K, N) bool      the criterion holds on the adversarial
``l2``, ``linf``       (K, N) float32   perturbation norms
``config``             () str           this run's :class:`AttackConfig` and provenance, JSON
=====================  ===============  ===================================================
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .._io import save_npz_atomic
from ..cli_config import setting
from .._validation import check_images
from ..errors import InputError
from . import ATTACKS, make_attack
from .base import distances
from .batched import attack_in_batches, predict
from .criteria import (
    Criterion,
    Misclassification,
    TargetedMisclassification,
    TopKMisclassification,
)


@dataclass
class AttackConfig:
    attack: str = setting(help="fgsm | bim | bim-l2 | pgd | pgd-l2 | deepfool | cw-l2 | square (one of safetynet.attacks.ATTACKS)")
    out: str = setting(help=".npz file to write (atomically)")
    model: str = setting("cifar10-resnet20", "checkpoint folder (model.safetensors + config.json) or shipped name")
    eps: list[float] | None = setting(None, "budget(s) in [0, 1] pixel units (L-inf) or L2 norm; required except for "
                                            "deepfool (default: unbounded)")
    steps: int | None = setting(None, "iterations (default: the attack's own)")
    step_size: float | None = setting(None, "per-step size (default: the attack's own)")
    overshoot: float | None = setting(None, "deepfool only: overshoot (default 0.02)")
    candidates: int | None = setting(None, "deepfool only: most likely classes tried per step (default 10; 3 is ~2x "
                                           "faster)")
    k: int | None = setting(None, "push the label out of the clean top-k instead of the top-1 (DeepFool-5: --k 5)")
    targeted: bool = setting(False, "attack towards a random (seeded) class != label per image")
    n: int = setting(1000, "first N images of the split, unshuffled")
    dataset: str = setting("cifar10-sample", "cifar10-sample | cifar10 | digits")
    data_dir: str | None = setting(None, "CIFAR-10 folder (for --dataset cifar10)")
    split: Literal["train", "test"] = setting("test", "split of the data set")
    batch_size: int = setting(256, "images per attack batch")
    seed: int = setting(0, "seeds random starts and random targets")
    extra: dict = setting(help="further keyword hyperparameters of the attack as JSON, e.g. '{\"random_start\": false}'",
                          factory=dict)

    def validate(self) -> None:
        if self.attack not in ATTACKS:
            raise InputError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACKS)}")
        if self.n < 1 or self.batch_size < 1:
            raise InputError(f"n and batch_size must be >= 1, got n={self.n}, batch_size={self.batch_size}")
        if self.k is not None and self.targeted:
            raise InputError("--k and --targeted are exclusive: a top-k attack has no single target")
        if self.k is not None and self.k < 1:
            raise InputError(f"k must be >= 1, got {self.k}")
        if self.eps is not None:
            for e in self.eps:
                if not math.isfinite(e) or e < 0:
                    raise InputError(f"eps must be finite and >= 0, got {e}")

    def hyperparameters(self) -> dict:
        hp = {name: getattr(self, name) for name in ("steps", "step_size", "overshoot", "candidates") if getattr(self, name) is not None}
        hp.update(self.extra)
        if "seed" in inspect.signature(ATTACKS[self.attack]).parameters:
            hp.setdefault("seed", self.seed)
        return hp


def _criterion(cfg: AttackConfig, labels: torch.Tensor, targets: torch.Tensor | None) -> Criterion:
    if targets is not None:
        return TargetedMisclassification(targets)
    if cfg.k is not None:
        return TopKMisclassification(labels, k=cfg.k)
    return Misclassification(labels)


def _median(values: torch.Tensor) -> float | None:
    return float(values.median()) if values.numel() else None


def attack_dataset(cfg: AttackConfig) -> dict:
    """Run ``cfg``, write ``cfg.out`` and return the summary (success rates, median norms)."""
    from ..data import load_dataset
    from ..models import resolve_model

    cfg.validate()
    attack = make_attack(cfg.attack, **cfg.hyperparameters())
    eps = list(cfg.eps) if cfg.eps else None
    if eps is None and attack.requires_eps:
        raise InputError(f"attack {cfg.attack!r} needs --eps (e.g. --eps 0.03137 for 8/255)")
    model, source = resolve_model(cfg.model)
    data = load_dataset(cfg.dataset, cfg.split, cfg.data_dir)
    if cfg.n > len(data):
        raise InputError(f"--n {cfg.n} exceeds the {len(data)} images of {cfg.dataset} ({cfg.split}); use --n {len(data)} or less")
    try:
        with torch.no_grad():
            num_classes = model.eval()(data.images_u8[:1].float().div_(255)).shape[1]
    except RuntimeError as e:
        raise InputError(f"the model cannot take {cfg.dataset} images of shape {tuple(data.images_u8.shape[1:])} "
                         f"({str(e).splitlines()[0]}); attack it on the data set it was trained for") from None
    index = torch.arange(cfg.n)
    labels = data.labels[: cfg.n].clone()
    targets = None
    if cfg.targeted:
        gen = torch.Generator().manual_seed(cfg.seed)
        targets = (labels + torch.randint(1, num_classes, (cfg.n,), generator=gen)) % num_classes

    n_eps = len(eps) if eps is not None else 1
    x = check_images(data.images_u8[: cfg.n].float().div_(255), "images")
    # The goal of a batch needs its labels and, for a targeted run, its targets: both travel as columns.
    y_goal = labels[:, None] if targets is None else torch.stack([labels, targets], 1)

    def goal(yb: torch.Tensor) -> Criterion:
        return _criterion(cfg, yb[:, 0], None if targets is None else yb[:, 1])

    t0 = time.perf_counter()
    res = attack_in_batches(attack, model, x, y_goal, goal, eps=eps, batch_size=cfg.batch_size, desc=cfg.attack)
    seconds = time.perf_counter() - t0
    adv = res.clipped if eps is not None else res.clipped.unsqueeze(0)  # (K, N, C, H, W)
    success = res.success if eps is not None else res.success.unsqueeze(0)  # (K, N)
    _, clean_logits = predict(model, x, cfg.batch_size)
    clean_pred = clean_logits.argmax(1)
    clean_success = goal(y_goal).bind(model, x, clean_logits.shape[1])(x, clean_logits)
    preds = torch.stack([predict(model, a, cfg.batch_size)[0] for a in adv])
    norms = distances(x, adv)
    l2, linf = norms["l2"], norms["linf"]
    provenance = {"config": dataclasses.asdict(cfg), "attack_repr": repr(attack),
                  "model": source, "torch": torch.__version__}
    from .. import __version__

    provenance["safetynet_version"] = __version__
    arrays = {
        "adversarial": adv.numpy().astype(np.float32),
        "eps": np.array([math.inf] if eps is None else eps, dtype=np.float64),
        "index": index.numpy(),
        "labels": labels.numpy(),
        "clean_predictions": clean_pred.numpy(),
        "predictions": preds.numpy(),
        "clean_success": clean_success.numpy(),
        "success": success.numpy(),
        "l2": l2.numpy().astype(np.float32),
        "linf": linf.numpy().astype(np.float32),
        "config": np.array(json.dumps(provenance)),
    }
    if targets is not None:
        arrays["targets"] = targets.numpy()
    save_npz_atomic(cfg.out, **arrays)

    results = []
    fresh = success & ~clean_success  # successes that needed a perturbation
    for i in range(n_eps):
        results.append({
            "eps": None if eps is None else eps[i],
            "success_rate": float(success[i].double().mean()),
            # among images the criterion did not already accept (untargeted: correctly classified)
            "success_rate_on_correct": float(success[i][~clean_success].double().mean()) if (~clean_success).any() else None,
            "median_l2": _median(l2[i][fresh[i]]),
            "median_linf": _median(linf[i][fresh[i]]),
        })
    return {
        "attack": cfg.attack, "dataset": cfg.dataset, "n": cfg.n, "out": str(Path(cfg.out)),
        "clean_accuracy": float((clean_pred == labels).double().mean()),
        "already_adversarial": float(clean_success.double().mean()),
        "seconds": round(seconds, 3), "images_per_second": round(cfg.n / seconds, 2),
        "results": results,
    }
