"""The paper's type-II attack: gradient descent on the classifier loss plus a smoothed detector score.

Lu, Issaranon, Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples Robustly",
ICCV 2017, sec. 3 ("Type II attacks on accessible SafetyNet fail"): the quantizer and the narrow
RBF have zero or vanishing gradients, "so we smooth the quantization operation and the RBF-SVM
kernel operation ... a sigmoid function with parameter lambda to simulate the quantization
process ... increasing the size of the RBF parameter sigma to form smoother gradients".

Distance Measure : L∞ or L2 (``distance=``)

The attacker minimises, per image, ``L_cls(z, y) + c * D(s)`` by projected gradient descent,
where ``z`` are the logits, ``s`` the per-layer detector scores of a differentiable surrogate
(:class:`DetectorScore`) and ``D`` combines them (``max`` for the rule "any", ``sum`` or
``min``), optionally as a hinge ``max(s + kappa_d, 0)``. Success is judged only by the criterion,
i.e. by the *real* detector (:class:`~safetynet.attacks.undetected.Undetected`); with
``early_stop`` each image keeps its first iterate that succeeds.

Surrogates here: :class:`SmoothScore` (the paper's smoothing of a SafetyNet),
:class:`MetzenScore` (the Metzen et al. subnetwork is differentiable as is),
:class:`ExtraClassScore` (a classifier with an extra "adversarial" class). The BPDA
(straight-through) surrogate lives in :mod:`safetynet.attacks.bpda`.

Example::

    >>> goal = Misclassification(y) & Undetected(net)
    >>> attack = SmoothedTypeII(net, sharpness=10.0, gamma_scale=0.1, steps=50)
    >>> raw, adv, success = attack(net.model, x, goal, eps=8 / 255)
    >>> result = sweep(net, net.model, x, goal, eps=8 / 255, sharpness=(1, 10, 100), gamma_scale=(1, 0.1))
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from ._gradient import check_steps, loss_classes, project, random_start, step
from .base import Attack, AttackResult, check_mask_values
from .criteria import Criterion

__all__ = ["DetectorScore", "ExtraClassScore", "JointPGD", "MetzenScore", "SmoothScore", "SmoothedTypeII",
           "SweepResult", "as_detector_score", "classifier_loss", "rbf_score_torch", "sweep"]

_COMBINES = ("max", "sum", "min")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# differentiable detector surrogates
# ---------------------------------------------------------------------------------------------
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


def as_detector_score(detector: Any, sharpness: float = 10.0, gamma_scale: float = 0.1) -> DetectorScore | None:
    """The natural differentiable surrogate of a detector (None for no detector).

    SafetyNet -> :class:`SmoothScore` (``sharpness``, ``gamma_scale``); MetzenDetector ->
    :class:`MetzenScore`; ExtraClassDetector -> :class:`ExtraClassScore`; a
    :class:`DetectorScore` is returned unchanged.
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
    if callable(getattr(detector, "detector_score", None)):  # a detector that provides its own surrogate
        return detector.detector_score(sharpness, gamma_scale)
    raise InputError(f"no differentiable surrogate for a {type(detector).__name__}; pass a SafetyNet, "
                     "MetzenDetector, ExtraClassDetector or a DetectorScore")


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
class JointPGD(Attack):
    r"""Projected gradient descent on ``L_cls + c * D(detector scores)`` through a differentiable surrogate.

    The common engine of :class:`SmoothedTypeII` and :class:`~safetynet.attacks.bpda.BPDA`
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


class SmoothedTypeII(JointPGD):
    r"""The SafetyNet paper's type-II attack (Lu et al., ICCV 2017, sec. 3) [https://arxiv.org/abs/1704.00103].

    Distance Measure : L∞ or L2

    PGD on ``L_cls + c * score_smooth`` where the SafetyNet's quantizer is a sigmoid of sharpness
    ``lambda`` and its RBF width sigma is enlarged (``gamma_scale < 1``, gamma = 1 / 2 sigma^2).
    Success is judged by the real detector through the criterion.

    Arguments:
        detector: a fitted SafetyNet (smoothed), MetzenDetector or ExtraClassDetector (both
            already differentiable: ``sharpness``/``gamma_scale`` are then unused), or a
            :class:`DetectorScore`.
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
