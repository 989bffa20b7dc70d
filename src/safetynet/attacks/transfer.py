"""Transfer (black-box) attacks: craft on a surrogate network, replay on the target defence.

Papernot, McDaniel, Goodfellow, "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples", 2016 [https://arxiv.org/abs/1605.07277]; the
SafetyNet paper's Table 4 rows "VGG/ResNet FastSign TF", "GradDesc TF", "Finetune TF" and
"Subnet Det TF" (Lu et al., ICCV 2017, sec. 3, "Type II attacks on black box SafetyNet").

Distance Measure : that of the inner attack

``TransferAttack(surrogate, inner)`` runs ``inner`` against ``surrogate`` (with the labels or
targets of the criterion, and optionally a *surrogate* detector it must also evade), and
returns those images; :class:`~safetynet.attacks.base.Attack` then judges them on the target
model with the target's criterion (e.g. ``Misclassification(y) & Undetected(net)``).

* "FastSign TF" / "GradDesc TF": ``TransferAttack(surrogate, FGSM())`` / ``BIM()``;
* "Subnet Det TF": a surrogate plus a Metzen subnetwork fitted on it, attacked jointly:
  ``TransferAttack(surrogate, SmoothedTypeII(metzen_on_surrogate), surrogate_detector=metzen_on_surrogate)``;
* "Finetune TF": a surrogate fine-tuned with adversarials as an extra class
  (:func:`safetynet.evaluation.surrogates.finetune_with_adversarial_class`):
  ``TransferAttack(DropExtraClass(model_k1), SmoothedTypeII(ExtraClassDetector(model_k1)),
  surrogate_detector=ExtraClassDetector(model_k1))``.

Example::

    >>> tf = TransferAttack(surrogate, BIM(steps=10))
    >>> raw, adv, success = tf(net.model, x, Misclassification(y) & Undetected(net), eps=8 / 255)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ._gradient import loss_classes
from .base import Attack
from .criteria import Criterion, Misclassification, TargetedMisclassification

__all__ = ["DropExtraClass", "TransferAttack"]


class DropExtraClass(nn.Module):
    """The first K logits of a (K+1)-class model: the surrogate classifier of "Finetune TF"."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Start in the wrapped model's mode: a fresh Module is in training mode, and attacks
        # restore the mode they found (which would switch the wrapped model to training).
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :-1]


class TransferAttack(Attack):
    r"""Craft with ``inner`` on ``surrogate``; success is judged on the attacked model.

    Distance Measure : the inner attack's

    Arguments:
        surrogate (nn.Module): the attacker's own classifier ([0, 1] inputs, same classes).
        inner (Attack): any attack (FGSM, BIM, PGD, SmoothedTypeII, BPDA, ...).
        surrogate_detector: a detector the surrogate examples must also evade (e.g. a
            MetzenDetector fitted on the surrogate, an ExtraClassDetector); None = type I on
            the surrogate. (Default: None)

    Call:
        ``attack(target_model, images, criterion_on_target, eps=...)``.

    Examples::
        >>> raw, adv, ok = TransferAttack(surrogate, BIM())(net.model, x, Misclassification(y) & Undetected(net), eps=0.1)
    """

    def __init__(self, surrogate: nn.Module, inner: Attack, *, surrogate_detector: Any = None) -> None:
        if not isinstance(surrogate, nn.Module):
            raise InputError(f"surrogate must be an nn.Module classifier, got {type(surrogate).__name__}")
        if not isinstance(inner, Attack):
            raise InputError(f"inner must be an Attack, got {type(inner).__name__}")
        self.surrogate = surrogate
        self.inner = inner
        self.surrogate_detector = surrogate_detector
        self.distance = inner.distance  # type: ignore[misc]
        self.requires_eps = inner.requires_eps  # type: ignore[misc]

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        from .undetected import Undetected

        classes, targeted = loss_classes(criterion, type(self).__name__)
        goal: Criterion = TargetedMisclassification(classes) if targeted else Misclassification(classes)
        if self.surrogate_detector is not None:
            goal = goal & Undetected(self.surrogate_detector)
        return self.inner(self.surrogate, x, goal, eps=eps).clipped

    def __repr__(self) -> str:
        return f"TransferAttack(surrogate={type(self.surrogate).__name__}, inner={self.inner!r})"
