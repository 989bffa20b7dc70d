"""The joint-PGD engine: gradient descent on the classifier loss plus a differentiable detector score.

Distance Measure : L∞ or L2 (``distance=``)

The attacker minimises, per image, ``L_cls(z, y) + c * D(s)`` by projected gradient descent,
where ``z`` are the logits, ``s`` the per-layer detector scores of a differentiable surrogate
(:class:`~safetynet.attacks.detector_scores.DetectorScore`) and ``D`` combines them (``max`` for
the rule "any", ``sum`` or ``min``), optionally as a hinge ``max(s + kappa_d, 0)``. Success is
judged only by the criterion, i.e. by the *real* detector
(:class:`~safetynet.attacks.undetected.Undetected`); with ``early_stop`` each image keeps its
first iterate that succeeds.

Attacks built on it: :class:`~safetynet.attacks.smoothed_type2.SmoothedTypeII` (the paper's),
:class:`~safetynet.attacks.bpda.BPDA`, :class:`~safetynet.attacks.opgd.OrthogonalPGD` and
:class:`~safetynet.attacks.code_matching.CodeMatching`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from ._gradient import check_steps, loss_classes, project, random_start, step
from .base import Attack, check_mask_values
from .criteria import Criterion
from .detector_scores import DetectorScore

__all__ = ["JointPGD", "classifier_loss", "detector_loss"]

_COMBINES = ("max", "sum", "min")


def classifier_loss(logits: torch.Tensor, classes: torch.Tensor, targeted: bool, kind: str = "cw",
                    kappa: float = 0.0) -> torch.Tensor:
    """Per-image classifier loss to *minimise* (N,).

    ``"cw"`` (Carlini & Wagner 2017): ``max(z_y - max_{j != y} z_j, -kappa)`` untargeted,
    ``max(max_{j != t} z_j - z_t, -kappa)`` targeted; negative once the goal holds. ``"ce"``:
    ``-CE(z, y)`` untargeted, ``CE(z, t)`` targeted.
    """
    if kind == "ce":
        ce = F.cross_entropy(logits, classes, reduction="none")
        return ce if targeted else -ce
    own = logits.gather(1, classes[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(classes, logits.shape[1]).bool(), -math.inf).amax(1)
    margin = others - own if targeted else own - others
    return margin.clamp_min(-kappa)


def detector_loss(scores: torch.Tensor, combine: str, kind: str = "raw", kappa: float = 0.0) -> torch.Tensor:
    """Per-image detector loss (N,) from per-layer scores (N, L): raw scores or hinges ``max(s + kappa, 0)``."""
    s = scores if kind == "raw" else (scores + kappa).clamp_min(0)
    if combine == "max":
        return s.amax(1)
    if combine == "min":
        return s.amin(1)
    return s.sum(1)


def _check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"seed must be an integer or None, got {seed!r}")
    return seed

class JointPGD(Attack):
    r"""Projected gradient descent on ``L_cls + c * D(detector scores)`` through a differentiable surrogate.

    The common engine of :class:`~safetynet.attacks.smoothed_type2.SmoothedTypeII` and
    :class:`~safetynet.attacks.bpda.BPDA`
    (subclasses change the surrogate and the defaults; :class:`~safetynet.attacks.opgd.OrthogonalPGD`
    changes the step direction).

    Distance Measure : L∞ or L2

    Arguments:
        score (DetectorScore or None): differentiable surrogate; None attacks the classifier only.
        distance (str): "linf" (signed steps) or "l2" (normalised steps). (Default: "linf")
        c (float): weight of the detector term. (Default: 1.0)
        kappa (float): confidence margin of the CW classifier loss. (Default: 0.0)
        classifier_loss (str): "cw" or "ce". (Default: "cw")
        detector_loss (str): "raw" (the score) or "hinge" (``max(s + detector_kappa, 0)``). (Default: "raw")
        detector_kappa (float): hinge margin on the detector score. (Default: 0.0)
        combine (str or None): "max", "sum" or "min" over layers; None follows the defence's
            rule ("any" -> max, "all" -> min). (Default: None)
        steps (int): iterations. (Default: 50)
        step_size (float or None): None: ``2.5 * eps / steps`` (Madry et al.). (Default: None)
        random_start (bool): start from a uniform point of the ball. (Default: False)
        seed (int or None): seeds the random start. (Default: None)
        early_stop (bool): keep each image's first iterate on which the criterion holds
            (checked with the real detector after every step). (Default: True)
        mask (Tensor or None): 0/1, broadcastable to the images: only elements with 1 change
            (e.g. ``(1, 4, 1, 1)`` with a 1 on the depth channel of RGB-D input). (Default: None)
    """

    requires_eps = True

    def __init__(self, score: DetectorScore | None = None, *, distance: str = "linf", c: float = 1.0,
                 kappa: float = 0.0, classifier_loss: str = "cw", detector_loss: str = "raw",
                 detector_kappa: float = 0.0, combine: str | None = None, steps: int = 50,
                 step_size: float | None = None, random_start: bool = False, seed: int | None = None,
                 early_stop: bool = True, mask: torch.Tensor | None = None) -> None:
        if score is not None and not isinstance(score, DetectorScore):
            raise InputError(f"score must be a DetectorScore or None, got {type(score).__name__}")
        self.score = score
        # An instance attribute on purpose: one engine serves both norms (base reads self.distance).
        self.distance = _check_choice(distance, "distance", ("linf", "l2"))  # type: ignore[misc]
        self.c = check_positive(c, "c", allow_zero=True)
        self.kappa = check_positive(kappa, "kappa", allow_zero=True)
        self.classifier_loss = _check_choice(classifier_loss, "classifier_loss", ("cw", "ce"))
        self.detector_loss = _check_choice(detector_loss, "detector_loss", ("raw", "hinge"))
        self.detector_kappa = check_positive(detector_kappa, "detector_kappa", allow_zero=True)
        self.combine = None if combine is None else _check_choice(combine, "combine", _COMBINES)
        self.steps = check_steps(steps)
        self.step_size = None if step_size is None else check_positive(step_size, "step_size")
        if not isinstance(random_start, bool) or not isinstance(early_stop, bool):
            raise InputError("random_start and early_stop must be True or False")
        self.random_start = random_start
        self.seed = _check_seed(seed)
        self.early_stop = early_stop
        self.mask = check_mask_values(mask)

    # -- pieces subclasses may change -----------------------------------------------------------
    def _combine(self) -> str:
        if self.combine is not None:
            return self.combine
        rule = getattr(self.score, "rule", "any")
        return "min" if rule == "all" else "max"

    def _forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.score is None:
            return model(x), None
        return self.score(x)

    def _losses(self, logits: torch.Tensor, scores: torch.Tensor | None, classes: torch.Tensor,
                targeted: bool, state: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-image (classifier loss, detector loss or None), both to minimise."""
        lc = classifier_loss(logits, classes, targeted, self.classifier_loss, self.kappa)
        if scores is None or self.c == 0:
            return lc, None
        return lc, detector_loss(scores, self._combine(), self.detector_loss, self.detector_kappa)

    def _prepare(self, model: nn.Module, x: torch.Tensor, classes: torch.Tensor, targeted: bool) -> dict:
        """Per-run state (e.g. anchor codes); indexed by sample where it is per sample."""
        return {}

    def _direction(self, model: nn.Module, xa: torch.Tensor, idx: torch.Tensor, classes: torch.Tensor,
                   targeted: bool, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(descent direction, logits) at the images ``xa`` (a leaf requiring grad).

        The direction is the gradient of the total loss; the logits (the classifier's own, from
        the same forward pass) let the loop check the criterion without another pass.
        """
        logits, scores = self._forward(model, xa)
        lc, ld = self._losses(logits, scores, classes, targeted, {k: v[idx] for k, v in state.items()})
        total = lc if ld is None else lc + self.c * ld.to(lc.dtype)
        (grad,) = torch.autograd.grad(total.sum(), xa)
        return grad, logits.detach()

    # -- the loop -------------------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        from .undetected import criterion_holds

        if eps is None:
            raise InputError(f"{type(self).__name__} needs eps=")
        classes, targeted = loss_classes(criterion, type(self).__name__)
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        mask = None if self.mask is None else self.mask.to(device=x.device, dtype=x.dtype)
        x_adv = x.clone()
        if self.random_start:
            gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            x_adv = random_start(x, eps, self.distance, mask, gen)
        state = self._prepare(model, x, classes, targeted)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for it in range(self.steps + 1):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0 or (it == self.steps and not self.early_stop):
                break
            xa = x_adv[idx].detach().requires_grad_(True)
            if it == self.steps:  # the last iterate: only its success is needed
                with torch.no_grad():
                    logits = model(xa)
                done[idx] = criterion_holds(criterion.subset(idx), xa.detach(), logits)
                break
            grad, logits = self._direction(model, xa, idx, classes[idx], targeted, state)
            keep = torch.ones(len(idx), dtype=torch.bool, device=x.device)
            if self.early_stop:
                # Success of the current iterate, judged by the real criterion; those images stop here.
                ok = criterion_holds(criterion.subset(idx), xa.detach(), logits)
                done[idx[ok]] = True
                keep = ~ok
            sel = idx[keep]
            grad = torch.nan_to_num(grad[keep])
            # step() ascends; we descend the loss.
            x_adv[sel] = project(x[sel], step(xa.detach()[keep], -grad, alpha, self.distance, mask), eps, self.distance)
        return x_adv
