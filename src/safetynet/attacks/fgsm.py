"""FGSM, the fast gradient sign method ("FastSign" in the SafetyNet paper)."""

from __future__ import annotations

import torch
from torch import nn

from ._gradient import ascent_gradient, loss_classes, step
from .base import Attack, check_mask_values
from .criteria import Criterion


class FGSM(Attack):
    r"""FGSM from 'Explaining and Harnessing Adversarial Examples' (Goodfellow, Shlens, Szegedy, ICLR 2015)
    [https://arxiv.org/abs/1412.6572].

    Distance Measure : L∞

    One step of size ``eps`` along the sign of the cross-entropy gradient (descending the
    target's cross-entropy when the criterion is :class:`TargetedMisclassification`).

    Arguments:
        mask (Tensor or None): 0/1 tensor broadcastable to the images; 1 where the input may
            change. (Default: None, every element)

    Call:
        ``attack(model, images, labels_or_criterion, eps=8/255)`` with images (N, C, H, W) in
        [0, 1]; returns ``AttackResult(raw, clipped, success)``.

    Examples::
        >>> attack = FGSM()
        >>> raw, adv, success = attack(model, images, labels, eps=8 / 255)
    """

    distance = "linf"

    def __init__(self, *, mask: torch.Tensor | None = None) -> None:
        self.mask = check_mask_values(mask)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        classes, targeted = loss_classes(criterion, "FGSM")
        mask = None if self.mask is None else self.mask.to(device=x.device, dtype=x.dtype)
        grad = ascent_gradient(model, x, classes, targeted)
        return step(x, grad, float(eps or 0.0), "linf", mask)
