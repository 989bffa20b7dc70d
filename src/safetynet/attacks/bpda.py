"""BPDA: attack SafetyNet through its *hard* quantizer with a straight-through backward pass.

Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML 2018 [https://arxiv.org/abs/1802.00420], sec. 4.1
(Backward Pass Differentiable Approximation); the straight-through estimator is from Bengio,
Léonard, Courville (2013).

Distance Measure : L∞ or L2

The quantizer ``code = #{k : a > t_k}`` is piecewise constant, so plain backpropagation gives a
gradient of exactly zero almost everywhere (:func:`quantize` with ``backward="zero"``, which
is what autograd computes for the deployed detector). BPDA keeps the exact forward pass (hard
codes, the exact RBF kernel: the scores the attack sees are the real ones) and replaces only
the quantizer's derivative: ``"identity"`` (straight-through, d code / d a := 1) or
``"sigmoid"`` (the derivative of the paper's sigmoid smoothing with sharpness lambda).

The loss is one joint objective over all layer detectors of an ensemble: a CW classifier
margin plus ``c * combine_l max(f_l(c) + kappa_d, 0)`` with ``combine`` "sum" (default) or "max".

Example::

    >>> attack = BPDA(net, backward="identity", steps=100)
    >>> raw, adv, success = attack(net.model, x, Misclassification(y) & Undetected(net), eps=8 / 255)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._validation import check_positive
from ..errors import InputError
from .detector_scores import SafetyNetScore, as_detector_score
from .joint_pgd import JointPGD, _check_choice
from .shifted_score import ShiftedScore

__all__ = ["BACKWARDS", "BPDA", "BPDAScore", "quantize"]

#: Backward passes of :func:`quantize`: the true derivative (zero), straight-through, sigmoid.
BACKWARDS = ("zero", "identity", "sigmoid")


class _Quantize(torch.autograd.Function):
    """Hard quantizer forward; the chosen surrogate derivative backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, thresholds: torch.Tensor, backward: str, sharpness: float) -> torch.Tensor:
        ctx.save_for_backward(a, thresholds)
        ctx.backward_mode, ctx.sharpness = backward, sharpness
        return (a[:, None, :] > thresholds[None]).sum(1).to(a.dtype)  # (N, D) integer levels

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, t = ctx.saved_tensors
        if ctx.backward_mode == "zero":
            g = torch.zeros_like(grad)
        elif ctx.backward_mode == "identity":
            g = grad
        else:
            lam = ctx.sharpness
            s = torch.sigmoid(lam * (a[:, None, :] - t[None]) - math.sqrt(lam))  # (N, L-1, D)
            g = grad * (lam * s * (1 - s)).sum(1)
        return g, None, None, None


def quantize(activations: torch.Tensor, thresholds: Any, backward: str = "identity",
             sharpness: float = 10.0) -> torch.Tensor:
    """Hard codes ``#{k : a > t_k}`` of (N, D) activations, with a chosen backward pass.

    ``thresholds`` is an ``ActivationQuantizer.thresholds_`` array (L-1, D). ``backward``:
    ``"zero"`` (the true derivative), ``"identity"`` (straight-through) or ``"sigmoid"`` (the
    derivative of :meth:`ActivationQuantizer.smooth` with ``sharpness``). The forward value is
    always exactly ``ActivationQuantizer.transform``.
    """
    _check_choice(backward, "backward", BACKWARDS)
    lam = check_positive(sharpness, "sharpness")
    a = activations.reshape(activations.shape[0], -1)
    t = torch.as_tensor(thresholds, dtype=a.dtype, device=a.device)
    if t.ndim != 2 or t.shape[1] != a.shape[1]:
        raise InputError(f"thresholds must have shape (levels-1, {a.shape[1]}), got {tuple(t.shape)}")
    return _Quantize.apply(a, t, backward, lam)


class BPDAScore(SafetyNetScore):
    """SafetyNet's exact scores (hard codes, exact RBF) with a surrogate backward for the quantizer.

    ``backward="zero"`` is the deployed detector with its true gradient (used by the
    reliability flags to show that gradients vanish); ``gamma_scale`` other than 1 also widens
    the kernel (then the forward score is no longer the real one).
    """

    def __init__(self, net: Any, backward: str = "identity", sharpness: float = 10.0, gamma_scale: float = 1.0) -> None:
        super().__init__(net, gamma_scale)
        self.backward = _check_choice(backward, "backward", BACKWARDS)
        self.sharpness = check_positive(sharpness, "sharpness")

    def codes(self, layer: str, activations: torch.Tensor) -> torch.Tensor:
        return quantize(activations, self.net.quantizers_[layer].thresholds_, self.backward, self.sharpness)

    def __repr__(self) -> str:
        return f"BPDAScore(backward={self.backward!r}, sharpness={self.sharpness:g}, gamma_scale={self.gamma_scale:g})"


class BPDA(JointPGD):
    r"""BPDA / straight-through type-II attack on SafetyNet (Athalye et al., ICML 2018).

    Distance Measure : L∞ or L2

    Arguments:
        detector: a fitted SafetyNet (a MetzenDetector / ExtraClassDetector is differentiable
            already and is attacked through its exact gradient).
        backward (str): "identity" (straight-through) or "sigmoid". (Default: "identity")
        sharpness (float): lambda of the sigmoid backward. (Default: 10.0)
        gamma_scale (float): RBF gamma multiplier; 1 keeps the exact kernel. (Default: 1.0)
        c (float): weight of the detector margin. (Default: 1.0)
        detector_kappa (float): margin kappa_d of ``max(f(c) + kappa_d, 0)``. (Default: 0.1)
        combine (str): "sum" (one joint loss over all layers) or "max". (Default: "sum")
        other keywords: see :class:`~safetynet.attacks.joint_pgd.JointPGD`.

    Call:
        ``attack(net.model, images, Misclassification(y) & Undetected(net), eps=8/255)``.

    Examples::
        >>> raw, adv, success = BPDA(net, steps=100)(net.model, x, Misclassification(y) & Undetected(net), eps=8 / 255)
    """

    def __init__(self, detector: Any, *, backward: str = "identity", sharpness: float = 10.0, gamma_scale: float = 1.0,
                 detector_loss: str = "hinge", detector_kappa: float = 0.1, combine: str | None = "sum",
                 **kwargs: Any) -> None:
        from ..safetynet import SafetyNet

        if backward == "zero":
            raise InputError("backward='zero' is the true (vanishing) gradient; BPDA needs 'identity' or 'sigmoid'")
        self.backward = _check_choice(backward, "backward", BACKWARDS)
        self.sharpness = check_positive(sharpness, "sharpness")
        self.gamma_scale = check_positive(gamma_scale, "gamma_scale")
        view = safetynet_view(detector)
        score = (BPDAScore(detector, backward, sharpness, gamma_scale) if isinstance(detector, SafetyNet)
                 else ShiftedScore(BPDAScore(view[0], backward, sharpness, gamma_scale), view[1]) if view is not None
                 else as_detector_score(detector))
        super().__init__(score, detector_loss=detector_loss, detector_kappa=detector_kappa, combine=combine, **kwargs)


def safetynet_view(detector: Any) -> tuple[Any, list[float]] | None:
    """``(SafetyNet, per-layer thresholds)`` of a detector that is a SafetyNet at a shifted operating point, else None.

    A calibrated SafetyNet (``Defence.calibrate``) or a SceneProof bundle's detectors say so with a
    ``safetynet_view()`` method; BPDA and orthogonal PGD then straight-through the real quantizer
    of that SafetyNet and shift its scores by the thresholds, as the deployed detector does.
    """
    view = getattr(detector, "safetynet_view", None)
    return view() if callable(view) else None


def safetynet_of(detector: Any) -> Any:
    """The SafetyNet whose codes ``detector`` decides on: itself, the net of its :func:`safetynet_view`, or None."""
    from ..safetynet import SafetyNet

    if isinstance(detector, SafetyNet):
        return detector
    view = safetynet_view(detector)
    return None if view is None else view[0]
