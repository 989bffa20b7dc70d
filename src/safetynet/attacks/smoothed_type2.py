"""The paper's type-II attack: gradient descent on the classifier loss plus a smoothed detector score.

Lu, Issaranon, Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples Robustly",
ICCV 2017, sec. 3 ("Type II attacks on accessible SafetyNet fail"): the quantizer and the narrow
RBF have zero or vanishing gradients, "so we smooth the quantization operation and the RBF-SVM
kernel operation ... a sigmoid function with parameter lambda to simulate the quantization
process ... increasing the size of the RBF parameter sigma to form smoother gradients".

Distance Measure : L∞ or L2 (``distance=``)

:class:`SmoothedTypeII` runs the joint-PGD engine (:class:`~safetynet.attacks.joint_pgd.JointPGD`)
through the smoothed surrogate :class:`~safetynet.attacks.detector_scores.SmoothScore`;
:func:`sweep` tries every (lambda, sigma) setting and keeps, per image, any setting's success.

Example::

    >>> goal = Misclassification(y) & Undetected(net)
    >>> attack = SmoothedTypeII(net, sharpness=10.0, gamma_scale=0.1, steps=50)
    >>> raw, adv, success = attack(net.model, x, goal, eps=8 / 255)
    >>> result = sweep(net, net.model, x, goal, eps=8 / 255, sharpness=(1, 10, 100), gamma_scale=(1, 0.1))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from .base import AttackResult
from .criteria import Criterion
from .detector_scores import _check_gamma_scale, as_detector_score
from .joint_pgd import JointPGD

__all__ = ["SmoothedTypeII", "SweepResult", "sweep"]


class SmoothedTypeII(JointPGD):
    r"""The SafetyNet paper's type-II attack (Lu et al., ICCV 2017, sec. 3) [https://arxiv.org/abs/1704.00103].

    Distance Measure : L∞ or L2

    PGD on ``L_cls + c * score_smooth`` where the SafetyNet's quantizer is a sigmoid of sharpness
    ``lambda`` and its RBF width sigma is enlarged (``gamma_scale < 1``, gamma = 1 / 2 sigma^2).
    Success is judged by the real detector through the criterion.

    Arguments:
        detector: a fitted SafetyNet (smoothed), MetzenDetector or ExtraClassDetector (both
            already differentiable: ``sharpness``/``gamma_scale`` are then unused), or a
            :class:`~safetynet.attacks.detector_scores.DetectorScore`.
        sharpness (float): lambda of the sigmoid quantizer, in 1 / activation units. (Default: 10.0)
        gamma_scale (float): gamma multiplier; ``sigma' = sigma / sqrt(gamma_scale)``. (Default: 0.1)
        other keywords: see :class:`JointPGD` (``distance``, ``c``, ``steps``, ...).

    Call:
        ``attack(net.model, images, Misclassification(y) & Undetected(net), eps=8/255)``.

    Examples::
        >>> attack = SmoothedTypeII(net, sharpness=10.0, gamma_scale=0.1, steps=50)
        >>> raw, adv, success = attack(net.model, x, Misclassification(y) & Undetected(net), eps=8 / 255)
    """

    def __init__(self, detector: Any, *, sharpness: float = 10.0, gamma_scale: float = 0.1, **kwargs: Any) -> None:
        self.sharpness = check_positive(sharpness, "sharpness")
        self.gamma_scale = _check_gamma_scale(gamma_scale)
        super().__init__(as_detector_score(detector, sharpness, gamma_scale), **kwargs)


# ---------------------------------------------------------------------------------------------
# the lambda / sigma sweep
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Per-setting success against the real detector, and the best adversarial per image."""

    settings: list[dict[str, Any]]  # {"sharpness", "gamma_scale", "success_rate" (float or per-eps list)}
    best: AttackResult  # per image: the first setting's success, else the last setting's output
    per_setting_success: list[torch.Tensor] = field(repr=False, default_factory=list)  # (N,) or (K, N) each


def sweep(detector: Any, model: nn.Module, x: torch.Tensor, criterion: Criterion | torch.Tensor, *,
          eps: float | Sequence[float], sharpness: Sequence[float] = (1.0, 10.0, 100.0),
          gamma_scale: Sequence[float] = (1.0, 0.1, 0.01), **kwargs: Any) -> SweepResult:
    """Run :class:`SmoothedTypeII` for every (lambda, gamma_scale) pair; success is the real detector's.

    The paper found the trade-off between an easy search (small lambda, wide kernel) and a
    faithful approximation (large lambda, ``gamma_scale = 1``) hard to make; the sweep reports
    each setting and keeps, per image, any setting's success (an attacker may try them all).
    """
    if not sharpness or not gamma_scale:
        raise InputError("sweep needs at least one sharpness and one gamma_scale value")
    settings: list[dict[str, Any]] = []
    successes: list[torch.Tensor] = []
    results: list[AttackResult] = []
    for lam in sharpness:
        for gs in gamma_scale:
            res = SmoothedTypeII(detector, sharpness=lam, gamma_scale=gs, **kwargs)(model, x, criterion, eps=eps)
            rate = res.success.float().mean(-1)
            settings.append({"sharpness": float(lam), "gamma_scale": float(gs),
                             "success_rate": rate.tolist() if rate.ndim else float(rate)})
            successes.append(res.success)
            results.append(res)
    # Per image (and eps): the first setting that succeeded; images no setting fooled keep the
    # last setting's attempt.
    raw, clipped, ok = results[-1]
    for res in reversed(results[:-1]):
        img = res.success[..., None, None, None]
        raw, clipped = torch.where(img, res.raw, raw), torch.where(img, res.clipped, clipped)
        ok = ok | res.success
    best = AttackResult(raw, clipped, ok)
    return SweepResult(settings, best, successes)
