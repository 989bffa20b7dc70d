"""Type-I attacks: adversarial examples that fool the classifier (Foolbox-style contract).

Every attack is called as ``attack(model, images, labels_or_criterion, eps=...)`` and returns
``AttackResult(raw, clipped, success)``; see :mod:`safetynet.attacks.base`. Models take [0, 1]
images (normalisation is inside the model).

>>> from safetynet.attacks import PGD, DeepFool, TopKMisclassification
>>> raw, adv, success = PGD(steps=10, seed=0)(model, images, labels, eps=8 / 255)
>>> raw, adv, success = DeepFool()(model, images, TopKMisclassification(labels, k=5))
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .base import Attack, AttackResult, clip_to_ball, distances
from .bim import BIM
from .bim_l2 import BIML2
from .criteria import (
    And,
    Criterion,
    Misclassification,
    TargetedMisclassification,
    TopKMisclassification,
    as_criterion,
)
from .cw import CWL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .pgd import PGD
from .pgd_l2 import PGDL2
from .square import Square

#: Attack names used by the CLI and the benchmark grid.
ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "bim-l2": BIML2,
    "pgd": PGD,
    "pgd-l2": PGDL2,
    "deepfool": DeepFool,
    "cw-l2": CWL2,  # Carlini & Wagner 2017 (minimisation, L2)
    "square": Square,  # Andriushchenko et al. 2020 (score-based black box, L-inf, query counted)
}


def make_attack(name: str, **hyperparameters: Any) -> Attack:
    """Build an attack by name (see :data:`ATTACKS`); unknown hyperparameters raise ``InputError``."""
    try:
        cls = ATTACKS[name]
    except KeyError:
        raise InputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}") from None
    try:
        return cls(**hyperparameters)
    except TypeError as e:
        raise InputError(f"attack {name!r} does not take these settings: {e}") from None


__all__ = [
    "ATTACKS",
    "BIM",
    "BIML2",
    "CWL2",
    "FGSM",
    "PGD",
    "PGDL2",
    "Square",
    "And",
    "Attack",
    "AttackResult",
    "Criterion",
    "DeepFool",
    "Misclassification",
    "TargetedMisclassification",
    "TopKMisclassification",
    "as_criterion",
    "clip_to_ball",
    "distances",
    "make_attack",
]

# Attacks on classifier + detector (type II, adaptive, black box) live in ``safetynet.attacks.adaptive``;
# they are also reachable here, imported on first use so that ``import safetynet.attacks`` stays
# light and free of the detector modules they depend on.
_ADAPTIVE = ("BPDA", "CodeMatching", "HopSkipJump", "JointPGD", "OrthogonalPGD", "SmoothedTypeII", "TransferAttack",
             "Undetected", "sweep")


def __getattr__(name: str) -> Any:
    if name in _ADAPTIVE:
        from . import adaptive

        return getattr(adaptive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ADAPTIVE))
