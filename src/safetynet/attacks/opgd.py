"""Orthogonal and selective PGD: fool the classifier and the detector without the two losses fighting.

Bryniarski, Hingun, Pachuca, Wang, Carlini, "Evading Adversarial Example Detection Defenses with
Orthogonal Projected Gradient Descent", ICLR 2022 [https://arxiv.org/abs/2106.15023].

Distance Measure : L∞ or L2

Summing the classifier loss and the detector loss lets one gradient cancel the other. Their
fix, per image and per step:

* while the image is still classified correctly (not yet at the target), step on the classifier
  loss gradient with its component along the detector gradient removed
  (``g_c - proj_{g_d} g_c``), so fooling the classifier does not raise the detector score to
  first order;
* once it is misclassified, step on the detector gradient with its component along the
  classifier gradient removed (``g_d - proj_{g_c} g_d``), so lowering the score keeps the label.

``mode="selective"`` drops the projections (each step follows one loss only). The detector
gradient comes from a differentiable surrogate: ``surrogate="bpda"`` (straight-through hard
quantizer, exact scores) or ``"smooth"`` (the paper's sigmoid + wide RBF) for a SafetyNet; a
MetzenDetector is differentiable as is.

Example::

    >>> attack = OrthogonalPGD(net, surrogate="bpda", steps=100)
    >>> raw, adv, success = attack(net.model, x, Misclassification(y) & Undetected(net), eps=8 / 255)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validation import check_positive
from .bpda import BPDAScore, safetynet_view
from .detector_scores import as_detector_score
from .joint_pgd import JointPGD, _check_choice
from .shifted_score import ShiftedScore

__all__ = ["OrthogonalPGD", "orthogonalize"]

_TINY = 1e-20


def orthogonalize(g: torch.Tensor, against: torch.Tensor) -> torch.Tensor:
    """``g - (<g, h> / <h, h>) h`` per image (first axis): ``g`` without its component along ``h``.

    Where ``h`` is zero the projection is zero and ``g`` is returned unchanged.
    """
    gf, hf = g.flatten(1).double(), against.flatten(1).double()
    coef = (gf * hf).sum(1) / (hf * hf).sum(1).clamp_min(_TINY)  # (N,)
    return (gf - coef[:, None] * hf).to(g.dtype).view_as(g)


class OrthogonalPGD(JointPGD):
    r"""Orthogonal / selective PGD of Bryniarski et al. (ICLR 2022) against a detector defence.

    Distance Measure : L∞ or L2

    Arguments:
        detector: a fitted SafetyNet, MetzenDetector, ExtraClassDetector or a DetectorScore.
        mode (str): "orthogonal" or "selective". (Default: "orthogonal")
        surrogate (str): SafetyNet gradient through "bpda" (straight-through) or "smooth". (Default: "bpda")
        backward (str): BPDA backward, "identity" or "sigmoid". (Default: "identity")
        sharpness (float): lambda for the sigmoid (smooth surrogate or sigmoid backward). (Default: 10.0)
        gamma_scale (float): RBF gamma multiplier (smooth: 0.1 by default; BPDA keeps 1).
        detector_kappa (float): the detector loss is ``max(s + detector_kappa, 0)``. (Default: 0.1)
        other keywords: see :class:`~safetynet.attacks.joint_pgd.JointPGD` (``c`` is unused: the two
            losses are never added).

    Call:
        ``attack(net.model, images, Misclassification(y) & Undetected(net), eps=8/255)``.

    Examples::
        >>> raw, adv, ok = OrthogonalPGD(net, steps=100)(net.model, x, Misclassification(y) & Undetected(net), eps=0.1)
    """

    def __init__(self, detector: Any, *, mode: str = "orthogonal", surrogate: str = "bpda", backward: str = "identity",
                 sharpness: float = 10.0, gamma_scale: float | None = None, detector_loss: str = "hinge",
                 detector_kappa: float = 0.1, combine: str | None = "sum", **kwargs: Any) -> None:
        from ..safetynet import SafetyNet

        self.mode = _check_choice(mode, "mode", ("orthogonal", "selective"))
        self.surrogate = _check_choice(surrogate, "surrogate", ("bpda", "smooth"))
        self.sharpness = check_positive(sharpness, "sharpness")
        if gamma_scale is None:
            gamma_scale = 1.0 if surrogate == "bpda" else 0.1
        self.gamma_scale = check_positive(gamma_scale, "gamma_scale")
        view = safetynet_view(detector)
        if isinstance(detector, SafetyNet) and surrogate == "bpda":
            score = BPDAScore(detector, backward, sharpness, gamma_scale)
        elif view is not None and surrogate == "bpda":  # a SafetyNet at a shifted operating point
            score = ShiftedScore(BPDAScore(view[0], backward, sharpness, gamma_scale), view[1])
        else:
            score = as_detector_score(detector, sharpness, gamma_scale)
        super().__init__(score, detector_loss=detector_loss, detector_kappa=detector_kappa, combine=combine, **kwargs)

    def _direction(self, model: nn.Module, xa: torch.Tensor, idx: torch.Tensor, classes: torch.Tensor,
                   targeted: bool, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, scores = self._forward(model, xa)
        lc, ld = self._losses(logits, scores, classes, targeted, state)
        gc = torch.autograd.grad(lc.sum(), xa, retain_graph=ld is not None)[0]
        logits = logits.detach()
        if ld is None:
            return gc, logits
        gd = torch.autograd.grad(ld.sum(), xa)[0].to(gc.dtype)
        if self.mask is not None:
            # Orthogonalise within the directions the attack may take, or the projection is wasted.
            m = self.mask.to(device=gc.device, dtype=gc.dtype)
            gc, gd = gc * m, gd * m
        pred = logits.argmax(1)
        fooled = pred == classes if targeted else pred != classes  # (n,)
        if self.mode == "orthogonal":
            gc, gd = orthogonalize(gc, gd), orthogonalize(gd, gc)
        return torch.where(fooled.view(-1, *([1] * (xa.ndim - 1))), gd, gc), logits
