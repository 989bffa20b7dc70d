"""Differentiable surrogates of detectors: what a white-box type-II attack descends through.

A :class:`DetectorScore` maps images to ``(logits (N, K), scores (N, L))``: the classifier's
logits and per-layer detector scores, ``scores[:, l] > 0`` where layer ``l`` would reject, with
gradients flowing to the images. The engine :class:`~safetynet.attacks.joint_pgd.JointPGD`
descends on them.

Surrogates here: :class:`SmoothScore` (the paper's smoothing of a SafetyNet, see
:mod:`safetynet.attacks.smoothed_type2`), :class:`MetzenScore` (the Metzen et al. subnetwork is
differentiable as is), :class:`ExtraClassScore` (a classifier with an extra "adversarial"
class). The BPDA (straight-through) surrogate lives in :mod:`safetynet.attacks.bpda`.
:func:`as_detector_score` picks the natural surrogate of a detector.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._validation import check_positive
from ..errors import InputError

__all__ = ["DetectorScore", "ExtraClassScore", "MetzenScore", "SafetyNetScore", "SmoothScore", "TorchScore", "as_detector_score",
           "eval_mode", "rbf_score_torch"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class DetectorScore(ABC):
    """A differentiable view of a defence: ``score(x) -> (logits (N, K), scores (N, L))``.

    ``scores[:, l] > 0`` means layer (or detector) ``l`` would reject; gradients flow to ``x``.
    ``rule`` says how the real defence combines its layers ("any": reject if any fires).
    """

    model: nn.Module
    rule: str = "any"

    @abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and per-layer scores for images ``x``; the model is already in eval mode."""

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with eval_mode(self.model):
            logits, scores = self.forward(x)
        if scores.ndim == 1:
            scores = scores[:, None]
        return logits, scores


def rbf_score_torch(codes: torch.Tensor, detector: Any, gamma_scale: float = 1.0) -> torch.Tensor:
    """Differentiable RBF-SVM score ``sum_i a_i exp(-gamma' ||c - c_i||^2) + b`` (N,), in float64.

    ``detector`` is a fitted :class:`~safetynet.detectors.svm.CodeSVMDetector`; ``gamma' =
    gamma_ * gamma_scale`` (``gamma_scale < 1`` widens the kernel, i.e. a larger sigma). Float64
    keeps integer code distances exact, so on hard codes with ``gamma_scale=1`` this equals the
    deployed detector's ``decision_function`` to rounding, and it keeps gradients from
    underflowing where the narrow kernel is ``exp(-50)`` small.
    """
    c = codes.reshape(codes.shape[0], -1).double()
    sv = torch.as_tensor(detector.support_vectors_, dtype=torch.float64, device=c.device)  # (n_SV, D)
    if sv.shape[1] != c.shape[1]:
        raise InputError(f"codes have {c.shape[1]} units but the detector was fitted on {sv.shape[1]}")
    alpha = torch.as_tensor(detector.dual_coef_, dtype=torch.float64, device=c.device).reshape(-1)  # (n_SV,)
    dist = (c * c).sum(1, keepdim=True) + (sv * sv).sum(1)[None] - 2.0 * c @ sv.T  # (N, n_SV)
    k = torch.exp(-float(detector.gamma_) * float(gamma_scale) * dist.clamp_min(0))
    return k @ alpha + float(detector.intercept_[0])


def _check_safetynet(net: Any) -> Any:
    from ..safetynet import SafetyNet

    if not isinstance(net, SafetyNet):
        raise InputError(f"expected a fitted SafetyNet, got {type(net).__name__}")
    net._fitted()
    return net


def _check_gamma_scale(gamma_scale: float) -> float:
    return check_positive(gamma_scale, "gamma_scale")


class SafetyNetScore(DetectorScore):
    """Shared forward of the SafetyNet surrogates: tap the layers, code them, score each with its RBF."""

    def __init__(self, net: Any, gamma_scale: float = 1.0) -> None:
        self.net = _check_safetynet(net)
        self.model = net.model
        self.rule = net.rule
        self.gamma_scale = _check_gamma_scale(gamma_scale)

    @abstractmethod
    def codes(self, layer: str, activations: torch.Tensor) -> torch.Tensor:
        """Differentiable codes (N, D) of the pooled activations of ``layer``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ..codes import pool_activation
        from ..taps import forward_with_taps

        logits, acts = forward_with_taps(self.model, x, self.net.layers)
        detectors = self.net.ensemble_.detectors
        per_layer = [rbf_score_torch(self.codes(n, pool_activation(acts[n], self.net.pool)), detectors[n],
                                     self.gamma_scale) for n in self.net.layers]
        return logits, torch.stack(per_layer, 1)  # (N, K), (N, L)


class SmoothScore(SafetyNetScore):
    """The paper's smoothing: sigmoid quantizer of sharpness lambda, RBF widened by ``gamma_scale``.

    Codes are :meth:`ActivationQuantizer.smooth` (``sum_k sigmoid(lambda (a - t_k) - sqrt(lambda))``);
    as lambda grows with ``gamma_scale = 1`` the score tends to the real one.
    """

    def __init__(self, net: Any, sharpness: float = 10.0, gamma_scale: float = 0.1) -> None:
        super().__init__(net, gamma_scale)
        self.sharpness = check_positive(sharpness, "sharpness")

    def codes(self, layer: str, activations: torch.Tensor) -> torch.Tensor:
        return self.net.quantizers_[layer].smooth(activations, self.sharpness)

    def __repr__(self) -> str:
        return f"SmoothScore(sharpness={self.sharpness:g}, gamma_scale={self.gamma_scale:g})"


class MetzenScore(DetectorScore):
    """Metzen et al.'s subnetwork logit; differentiable as it is, from the same forward pass."""

    def __init__(self, detector: Any) -> None:
        from .undetected import MetzenAdapter

        if isinstance(detector, MetzenAdapter):
            detector = detector.detector
        if not hasattr(detector, "subnet_"):
            raise InputError("MetzenScore needs a fitted MetzenDetector; call fit(natural, adversarial) first")
        self.detector = detector
        self.model = detector.model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ..taps import forward_with_taps

        logits, acts = forward_with_taps(self.model, x, self.detector.layer)
        a = acts[self.detector.layer]
        if a.ndim == 2:  # a fully connected tap is read as a (N, D, 1, 1) map, as in fit
            a = a[:, :, None, None]
        return logits, self.detector.subnet_(a)[:, None]

    def __repr__(self) -> str:
        return f"MetzenScore(layer={self.detector.layer!r})"


class ExtraClassScore(DetectorScore):
    """A (K+1)-class model: logits of the K real classes and ``z_K - max_{j<K} z_j`` as the score."""

    def __init__(self, model: nn.Module) -> None:
        from .undetected import ExtraClassDetector

        if isinstance(model, ExtraClassDetector):
            model = model.model
        if not isinstance(model, nn.Module):
            raise InputError(f"ExtraClassScore needs an nn.Module with K+1 outputs, got {type(model).__name__}")
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.model(x)
        return z[:, :-1], (z[:, -1] - z[:, :-1].amax(1))[:, None]

    def __repr__(self) -> str:
        return "ExtraClassScore()"


class TorchScore(DetectorScore):
    """A detector that computes its own differentiable score: ``detector.logits_and_score_torch(x)``.

    The baselines of :mod:`safetynet.detectors` (Mahalanobis, LID, KD+BU) return the classifier's
    logits and their logistic-regression logit from one forward pass; any user detector with the
    same method is attacked the same way.
    """

    def __init__(self, detector: Any) -> None:
        if not callable(getattr(detector, "logits_and_score_torch", None)):
            raise InputError(f"{type(detector).__name__} has no logits_and_score_torch(x) method")
        self.detector = detector
        self.model = detector.model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, score = self.detector.logits_and_score_torch(x)
        return logits, score[:, None]

    def __repr__(self) -> str:
        return f"TorchScore({type(self.detector).__name__})"


def as_detector_score(detector: Any, sharpness: float = 10.0, gamma_scale: float = 0.1) -> DetectorScore | None:
    """The natural differentiable surrogate of a detector (None for no detector).

    SafetyNet -> :class:`SmoothScore` (``sharpness``, ``gamma_scale``); MetzenDetector ->
    :class:`MetzenScore`; ExtraClassDetector -> :class:`ExtraClassScore`; a detector with
    ``logits_and_score_torch(x)`` (the Mahalanobis, LID and KD+BU baselines) -> :class:`TorchScore`; a
    :class:`DetectorScore` is returned unchanged; any detector exposing
    ``detector_score(sharpness, gamma_scale) -> DetectorScore`` provides its own surrogate.
    """
    from ..detectors.metzen import MetzenDetector
    from ..safetynet import SafetyNet
    from .undetected import ExtraClassDetector, MetzenAdapter

    if detector is None or isinstance(detector, DetectorScore):
        return detector
    if isinstance(detector, SafetyNet):
        return SmoothScore(detector, sharpness, gamma_scale)
    if isinstance(detector, (MetzenDetector, MetzenAdapter)):
        return MetzenScore(detector)
    if isinstance(detector, ExtraClassDetector):
        return ExtraClassScore(detector)
    # Duck-typed: a defence defined outside this package can ship its own surrogate.
    if callable(getattr(detector, "detector_score", None)):
        return detector.detector_score(sharpness, gamma_scale)
    if callable(getattr(detector, "logits_and_score_torch", None)):
        return TorchScore(detector)
    raise InputError(f"no differentiable surrogate for a {type(detector).__name__}; pass a SafetyNet, "
                     "MetzenDetector, ExtraClassDetector, a DetectorScore or an object with a "
                     "detector_score(sharpness, gamma_scale) or logits_and_score_torch(x) method")
