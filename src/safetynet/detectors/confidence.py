"""Rejection by classification confidence: the baseline of the SafetyNet paper's supplementary material.

The simplest detector rejects an input when the classifier is unsure: when its largest softmax
probability falls below a cut-off. The paper (Lu, Issaranon, Forsyth, ICCV 2017, supplementary
"rejecting by classification confidence") compares SafetyNet against it; adversarial examples
are usually classified *with high confidence* (paper sec. 1), so this baseline is expected to
be weak against strong attacks -- which is the point of the comparison.

Score: ``decision_function(X) = 1 − max softmax(X)``, higher = more adversarial (label 1);
``predict(X) = decision_function(X) > threshold_``. The threshold is either given or chosen in
``fit`` on natural data for a target false positive rate (see
:func:`safetynet.metrics.threshold_at_fpr`).

Example::

    det = ConfidenceDetector(target_fpr=0.05).fit(logits_val_natural)
    rejected = det.predict(logits_test)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ..errors import InputError
from ..metrics import threshold_at_fpr

__all__ = ["ConfidenceDetector"]


class ConfidenceDetector(BaseEstimator):
    """Reject when the maximum softmax probability is low (sklearn-style, adversarial = 1).

    Args:
        threshold: fixed cut-off on the score ``1 − max softmax`` (``None``: learn it in ``fit``).
        target_fpr: share of natural examples ``fit`` may flag when ``threshold`` is None.
        inputs: ``"logits"`` (softmax is applied) or ``"probs"`` (rows already sum to 1).

    Fitted attributes: ``threshold_`` (score cut-off), ``confidence_threshold_``
    (= 1 − ``threshold_``: inputs whose top probability is below it are rejected),
    ``classes_`` = [0, 1], ``n_features_in_`` (number of classes of the classifier).
    """

    def __init__(self, threshold: float | None = None, target_fpr: float = 0.05,
                 inputs: Literal["logits", "probs"] = "logits") -> None:
        self.threshold = threshold
        self.target_fpr = target_fpr
        self.inputs = inputs

    # ------------------------------------------------------------------ helpers
    def _validate_params(self) -> None:
        if self.inputs not in ("logits", "probs"):
            raise InputError(f"inputs must be 'logits' or 'probs', got {self.inputs!r}")
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0):
            raise InputError(f"threshold must be None or a number in [0, 1] (a cut-off on 1 - max softmax), got {t!r}")
        f = self.target_fpr
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0 or math.isnan(f):
            raise InputError(f"target_fpr must be a number in [0, 1], got {f!r}")

    def _array(self, X: object) -> np.ndarray:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        try:
            a = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"X must be a 2-D array of {self.inputs} (N, num_classes), got {type(X).__name__}") from None
        if a.ndim != 2 or a.shape[1] < 2:
            raise InputError(f"X must have shape (N, num_classes) with num_classes >= 2, got {a.shape}; pass the classifier's {self.inputs}")
        if a.shape[0] == 0:
            raise InputError("X has 0 rows; pass at least one example")
        if not np.isfinite(a).all():
            raise InputError(f"X contains NaN or Inf {self.inputs}; check the classifier's output")
        if self.inputs == "probs" and (a.min() < 0 or a.max() > 1 or not np.allclose(a.sum(1), 1.0, atol=1e-4)):
            raise InputError("X must hold probabilities (each row in [0, 1], summing to 1); pass inputs='logits' for raw scores")
        return a

    def _scores(self, a: np.ndarray) -> np.ndarray:
        if self.inputs == "logits":
            # Stable softmax: the max probability is 1 / sum(exp(z - z_max)).
            z = a - a.max(axis=1, keepdims=True)
            pmax = 1.0 / np.exp(z).sum(axis=1)
        else:
            pmax = a.max(axis=1)
        return 1.0 - pmax

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise InputError("This ConfidenceDetector instance is not fitted yet. Call 'fit' with natural logits before using it.")

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X: object, y: object | None = None) -> "ConfidenceDetector":
        """Pick ``threshold_``: the given ``threshold``, else one flagging ≤ ``target_fpr`` of natural X.

        ``y`` (optional, 0 = natural, 1 = adversarial) restricts the calibration to the rows
        with label 0; adversarial rows teach this detector nothing.
        """
        self._validate_params()
        a = self._array(X)
        if y is not None:
            yy = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
            if yy.shape != (a.shape[0],) or not np.isin(yy, (0, 1)).all():
                raise InputError(f"y must be 0 (natural) / 1 (adversarial) labels of shape ({a.shape[0]},), got shape {yy.shape}")
            a = a[yy == 0]
            if a.shape[0] == 0:
                raise InputError("y has no natural (label 0) rows; the threshold is calibrated on natural examples")
        self.n_features_in_ = a.shape[1]
        self.classes_ = np.array([0, 1])
        scores = self._scores(a)
        self.threshold_ = float(self.threshold) if self.threshold is not None else float(threshold_at_fpr(scores, self.target_fpr))
        self.confidence_threshold_ = 1.0 - self.threshold_
        return self

    def decision_function(self, X: object) -> np.ndarray:
        """``1 − max softmax`` per row, shape (N,): higher = less confident = more adversarial."""
        self._check_fitted()
        a = self._array(X)
        if a.shape[1] != self.n_features_in_:
            raise InputError(f"X has {a.shape[1]} classes, but ConfidenceDetector was fitted with {self.n_features_in_}")
        return self._scores(a)

    def predict(self, X: object) -> np.ndarray:
        """1 (reject as adversarial) where ``decision_function(X) > threshold_``, else 0."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)
