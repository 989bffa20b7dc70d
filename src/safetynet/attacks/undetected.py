"""``Undetected(detector)``: the success criterion of a type-II attack, judged by the *real* detector.

Lu, Issaranon, Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples Robustly",
ICCV 2017, sec. 1: a type-II adversarial example must be (a) close to a natural image,
(b) misclassified and (c) *not rejected* by SafetyNet. With the Foolbox-style criteria::

    goal = Misclassification(labels) & Undetected(safetynet)
    raw, adv, success = attack(safetynet.model, images, goal, eps=8 / 255)

Whatever surrogate an attack differentiates (a sigmoid quantizer, a straight-through
estimator, a widened RBF), this criterion asks the deployed detector: hard quantization and
the exact RBF-SVM score (:meth:`SafetyNet.detect`), on the candidate images themselves. Because
:class:`~safetynet.attacks.base.Attack` re-checks the criterion on the final clipped images,
a reported type-II success is always a success against the real defence.

Detectors accepted (:func:`as_detector`):

* :class:`~safetynet.safetynet.SafetyNet`, with one layer ("Det A") or several combined by its
  rule ("Det ensemble", the paper's Det ABC);
* :class:`~safetynet.detectors.metzen.MetzenDetector` (wrapped in :class:`MetzenAdapter`);
* :class:`ExtraClassDetector`: a classifier with one extra "adversarial" output (the paper's
  "Finetune TF" surrogate), which rejects when that class wins;
* anything with ``detect(images) -> bool array`` (True = rejected).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from .._validation import check_images
from ..errors import InputError
from ..models.batched import predict_logits
from .criteria import Criterion

__all__ = ["DetectorLike", "ExtraClassDetector", "MetzenAdapter", "Undetected", "as_detector", "combined_labels",
           "criterion_holds"]


@runtime_checkable
class DetectorLike(Protocol):
    """What :class:`Undetected` needs: ``detect(images) -> (N,) bool`` (True = rejected)."""

    def detect(self, x: torch.Tensor) -> Any: ...


class MetzenAdapter:
    """A fitted :class:`MetzenDetector` seen as an image detector: rejects when its logit > ``threshold``."""

    def __init__(self, detector: Any, threshold: float = 0.0) -> None:
        if not hasattr(detector, "subnet_"):
            raise InputError("MetzenAdapter needs a fitted MetzenDetector; call fit(natural, adversarial) first")
        self.detector = detector
        self.threshold = float(threshold)

    @property
    def model(self) -> nn.Module:
        return self.detector.model

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        return self.detector.decision_function(x)

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.decision_function(x) > self.threshold

    def __repr__(self) -> str:
        return f"MetzenAdapter(layer={self.detector.layer!r}, threshold={self.threshold})"


class ExtraClassDetector:
    """A (K+1)-class classifier whose last class means "adversarial": rejects when that class wins.

    ``decision_function`` is ``z_K - max_{j<K} z_j`` (> 0 exactly when the extra class is the
    top-1). Used for the paper's "Finetune TF" surrogate (Table 4), a classifier fine-tuned with
    adversarial examples labelled as an additional class.
    """

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch nn.Module with K+1 outputs, got {type(model).__name__}")
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        check_images(x, "x")
        logits = predict_logits(self.model, x, self.batch_size)
        if logits.shape[1] < 3:
            raise InputError(f"an extra-class detector needs K >= 2 classes plus the extra one, got {logits.shape[1]} outputs")
        return (logits[:, -1] - logits[:, :-1].amax(1)).double().numpy()

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.decision_function(x) > 0

    def __repr__(self) -> str:
        return f"ExtraClassDetector({type(self.model).__name__})"


def as_detector(detector: Any) -> DetectorLike:
    """SafetyNet or any ``detect``-able object as is; a MetzenDetector wrapped in :class:`MetzenAdapter`."""
    from ..detectors.ensemble import DetectorEnsemble
    from ..detectors.metzen import MetzenDetector

    if isinstance(detector, MetzenDetector):
        return MetzenAdapter(detector)
    if isinstance(detector, DetectorEnsemble):
        raise InputError("a DetectorEnsemble scores codes, not images; use it through a SafetyNet "
                         "(SafetyNet(model, layers=[...], rule='any').fit(...)) so the criterion can see the images")
    if isinstance(detector, DetectorLike) and callable(getattr(detector, "detect", None)):
        return detector
    raise InputError(f"detector must be a SafetyNet, a MetzenDetector or have a detect(images) method, "
                     f"got {type(detector).__name__}")


def _rejected(detector: DetectorLike, x: torch.Tensor) -> torch.Tensor:
    out = detector.detect(x.detach())
    rejected = torch.as_tensor(np.asarray(out), dtype=torch.bool, device=x.device)
    if rejected.shape != (x.shape[0],):
        raise InputError(f"{type(detector).__name__}.detect returned shape {tuple(rejected.shape)}, "
                         f"expected ({x.shape[0]},)")
    return rejected


class Undetected(Criterion):
    """Adversarial when the real (hard-quantized, exact-kernel) detector does *not* reject ``x_adv``.

    Args:
        detector: SafetyNet, MetzenDetector, ExtraClassDetector or any object with
            ``detect(images) -> (N,) bool``.

    The classifier logits are ignored: combine with a class criterion,
    ``Misclassification(y) & Undetected(net)``, for a type-II goal.
    """

    def __init__(self, detector: Any) -> None:
        self.detector = as_detector(detector)

    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ~_rejected(self.detector, x_adv)

    def __repr__(self) -> str:
        return f"Undetected({self.detector!r})"


@torch.no_grad()
def combined_labels(model: nn.Module, detector: DetectorLike | None, x: torch.Tensor,
                    batch_size: int = 256) -> torch.Tensor:
    """The defended system's hard-label output: class index, or ``num_classes`` where rejected.

    This is all a black-box attacker sees (the rejection is an extra label).
    """
    logits = predict_logits(model, x, batch_size)
    labels = logits.argmax(1)
    if detector is not None:
        labels = torch.where(_rejected(as_detector(detector), x), torch.full_like(labels, logits.shape[1]), labels)
    return labels


@torch.no_grad()
def criterion_holds(criterion: Criterion, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``criterion(x, logits)``, asking it only where the top-1 class is not excluded.

    Equal to the full call (a criterion is False wherever its ``excluded_classes`` contain
    the top-1 label), but the detector inside ``Undetected`` then runs only on the images
    that already fool the classifier, which is most of the saving in attack loops.
    """
    excluded = criterion.excluded_classes(logits.shape[1])
    if excluded is None:
        return criterion(x, logits)
    ok = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    cand = (~excluded.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)).nonzero().squeeze(1)
    if cand.numel():
        ok[cand] = criterion.subset(cand)(x[cand], logits[cand])
    return ok
