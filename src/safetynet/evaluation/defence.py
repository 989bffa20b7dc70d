"""A defended classifier, as the evaluation engine sees it: the :class:`Defence`.

Every column of the paper's Table 4 is a Defence: the bare classifier ("Ori"), the classifier
with the Metzen et al. subnetwork ("Subnet Det"), with SafetyNet on one layer ("Det A") or on
several ("Det ensemble" / the paper's Det ABC), the confidence baseline, and the SceneProof
bundle's calibrated detectors. A Defence answers four questions about a batch of images:

* :meth:`~Defence.predict`: what the classifier says (class indices);
* :meth:`~Defence.score`: the detector's score, **higher = more adversarial** (None: no detector);
* :meth:`~Defence.detect`: whether the detector rejects (``score > threshold``);
* :meth:`~Defence.criterion`: the attacker's goal against this defence,
  ``Misclassification(y) & Undetected(...)``, judged by the real detector at the *current*
  threshold.

``calibrate(natural, fpr)`` moves the rejection threshold so that a share ``fpr`` of the given
natural images is rejected (:func:`~safetynet.metrics.threshold_at_fpr`); before any
calibration the threshold is the detector's own (0 for an SVM margin or a subnetwork logit).
Attacks see the calibrated decision too: :attr:`~Defence.target` is the detector shifted by the
threshold, and its differentiable surrogate (:meth:`CalibratedDetector.detector_score`) is
shifted the same way, so an adaptive attack aims at exactly what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..attacks.batched import predict
from ..metrics import threshold_at_fpr

__all__ = ["CalibratedDetector", "ConfidenceOnImages", "Defence", "Verdicts", "calibration_split", "smoothable"]


def smoothable(detector: Any) -> bool:
    """True when the paper's smoothed attack has a lambda/sigma knob on ``detector`` (so a sweep means something).

    A SafetyNet has one; other detectors say so with a ``smoothable`` attribute (a Metzen
    subnetwork is differentiable as it is: nothing to sweep).
    """
    from ..safetynet import SafetyNet

    return isinstance(detector, SafetyNet) or bool(getattr(detector, "smoothable", False))


@dataclass
class Verdicts:
    """What a defence says about N images."""

    pred: np.ndarray  # (N,) class indices from the classifier
    rejected: np.ndarray  # (N,) bool, True = the detector rejects
    score: np.ndarray | None  # (N,) detector score, higher = more adversarial; None without a detector


class CalibratedDetector:
    """A detector whose decision is ``decision_function(x) - threshold > 0``.

    ``detect`` is what :class:`~safetynet.attacks.undetected.Undetected` asks;
    ``detector_score`` gives the adaptive attacks the inner detector's differentiable surrogate
    shifted by the same threshold (see :func:`~safetynet.attacks.detector_scores.as_detector_score`).
    """

    def __init__(self, detector: Any, threshold: float) -> None:
        self.detector = detector
        self.threshold = float(threshold)
        self.model = getattr(detector, "model", None)

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        return np.asarray(self.detector.decision_function(x), dtype=float) - self.threshold

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.decision_function(x) > 0

    @property
    def smoothable(self) -> bool:
        """Whether the inner detector has a smoothing knob (lambda, sigma) for the paper's attack."""
        return smoothable(self.detector)

    def safetynet_view(self) -> tuple[Any, list[float]] | None:
        """``(SafetyNet, per-layer thresholds)`` when the inner detector is a SafetyNet (BPDA's straight-through path)."""
        from ..safetynet import SafetyNet

        if not isinstance(self.detector, SafetyNet):
            return None
        return self.detector, [self.threshold] * len(self.detector.layers)

    def detector_score(self, sharpness: float, gamma_scale: float) -> Any:
        from ..attacks.shifted_score import ShiftedScore
        from ..attacks.detector_scores import as_detector_score

        return ShiftedScore(as_detector_score(self.detector, sharpness, gamma_scale), [self.threshold])

    def __repr__(self) -> str:
        return f"CalibratedDetector({self.detector!r}, threshold={self.threshold:.6g})"


class ConfidenceOnImages:
    """A fitted :class:`~safetynet.detectors.confidence.ConfidenceDetector` (which scores logits) seen on images.

    ``decision_function`` is its score (1 - max softmax) minus its fitted threshold, so it fires (> 0)
    exactly where the detector's ``predict`` rejects.
    """

    def __init__(self, model: nn.Module, detector: Any, batch_size: int = 256) -> None:
        if not hasattr(detector, "threshold_"):
            raise InputError("ConfidenceOnImages needs a fitted ConfidenceDetector; call fit(natural_logits) first")
        self.model, self.detector, self.batch_size = model, detector, batch_size

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        _, logits = predict(self.model, x, self.batch_size)
        return self.detector.decision_function(logits) - self.detector.threshold_

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.decision_function(x) > 0

    def logits_and_score_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, 1 - max softmax - threshold)`` with gradients to ``x``: what an adaptive attack descends."""
        logits = self.model(x)
        return logits, 1.0 - logits.double().softmax(1).amax(1) - self.detector.threshold_

    def __repr__(self) -> str:
        return f"ConfidenceOnImages(threshold={self.detector.threshold_:.6g})"


class Defence:
    """A classifier plus (maybe) a rejecting detector, evaluated on its real path.

    Args:
        key: short id used in results (``"ori"``, ``"det_a"``, ...).
        model: the classifier (an ``nn.Module`` on [0, 1] images).
        detector: None (the bare classifier) or anything with ``decision_function(images)``
            (> threshold = adversarial) and ``detect(images)``: a SafetyNet, a MetzenDetector,
            a SceneProof bundle's detector, :class:`ConfidenceOnImages`.
        title: the column title in reports.
        batch_size: images per forward pass.
    """

    def __init__(self, key: str, model: nn.Module, detector: Any = None, *, title: str | None = None,
                 batch_size: int = 256) -> None:
        if detector is not None and not callable(getattr(detector, "decision_function", None)):
            raise InputError(f"the detector of defence {key!r} needs decision_function(images); "
                             f"got {type(detector).__name__}")
        self.key, self.model, self.detector = key, model, detector
        self.title = title or key
        self.batch_size = batch_size
        self.threshold: float | None = None  # None: the detector's own (0)

    # -- what it says ------------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> np.ndarray | None:
        """Detector scores (N,), higher = more adversarial; None for the bare classifier."""
        if self.detector is None:
            return None
        return np.asarray(self.detector.decision_function(x), dtype=float)

    def predict(self, x: torch.Tensor) -> np.ndarray:
        return predict(self.model, x, self.batch_size)[0].numpy()

    def evaluate(self, x: torch.Tensor) -> Verdicts:
        """Labels, rejections and scores of ``x``; SafetyNet answers all three from one forward pass."""
        from ..safetynet import SafetyNet

        if isinstance(self.detector, SafetyNet):
            out = self.detector.classify(x)
            pred, score = out.logits.argmax(1).numpy(), np.asarray(out.score, dtype=float)
        else:
            pred, score = self.predict(x), self.score(x)
        if score is None:
            return Verdicts(pred, np.zeros(len(x), dtype=bool), None)
        return Verdicts(pred, score > (self.threshold or 0.0), score)

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.evaluate(x).rejected

    # -- what the attacker aims at --------------------------------------------------------------
    @property
    def target(self) -> Any:
        """The detector as deployed (shifted by a calibrated threshold), for ``Undetected`` and the adaptive attacks."""
        if self.detector is None or not self.threshold:
            return self.detector
        return CalibratedDetector(self.detector, self.threshold)

    def criterion(self, y: torch.Tensor) -> Any:
        from ..attacks import Misclassification
        from ..attacks.undetected import Undetected

        return Misclassification(y) if self.detector is None else Misclassification(y) & Undetected(self.target)

    # -- operating point -------------------------------------------------------------------------
    def calibrate(self, natural: torch.Tensor, fpr: float) -> Defence:
        """Set the threshold so that a share ``fpr`` of the ``natural`` images is rejected; returns self.

        Calibrate on natural images that are *not* the ones you report on (the fit split).
        """
        if self.detector is None:
            raise InputError(f"defence {self.key!r} has no detector to calibrate")
        self.threshold = threshold_at_fpr(self.score(natural), fpr)
        return self

    def __repr__(self) -> str:
        return f"Defence({self.key!r}, detector={self.detector!r}, threshold={self.threshold})"


def calibration_split(n: int, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fit positions, calibration positions)`` of ``n`` natural images: a seeded ``share`` held out.

    Thresholds set on images the detector was fitted on would be optimistic (training points sit
    far from the margin), so calibration images are never fitted on.
    """
    n_cal = max(1, int(round(share * n)))
    if n - n_cal < 20:
        raise InputError(f"only {n} natural fit images: too few to fit detectors and hold {n_cal} out for calibration; "
                         "raise --n-fit or lower --calibration")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    return perm[n_cal:].sort().values, perm[:n_cal].sort().values
