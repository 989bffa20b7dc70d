"""Several per-layer detectors combined into one decision (SafetyNet, Lu et al., ICCV 2017, Table 4).

The paper's "Det ABC" runs an RBF-SVM on each of three layers and "declare[s] an adversary when
any detector responds" (``rule="any"``); ``rule="all"`` is the conjunction A and B. For ROC
curves the combined score is the max (any) or min (all) of the per-detector margins, so
``decision_function(X) > 0`` is exactly the combined decision. The margins of different layers
are not calibrated against each other; the max/min is a ranking score, not a probability.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping

import numpy as np
from sklearn.base import clone

from ..errors import InputError


class Rule(str, Enum):
    ANY = "any"  # adversarial if any detector fires (paper's Det ABC)
    ALL = "all"  # adversarial only if every detector fires


class DetectorEnsemble:
    """Combine detectors keyed by layer name; inputs are dicts ``{layer: codes (N, D)}``.

    Each detector follows the sklearn contract with classes (0 = natural, 1 = adversarial) and
    ``decision_function`` positive toward "adversarial".
    """

    def __init__(self, detectors: Mapping[str, Any], rule: str | Rule = "any") -> None:
        if not isinstance(detectors, Mapping) or not detectors:
            raise InputError("detectors must be a non-empty dict {layer name: detector}")
        for name, det in detectors.items():
            if not hasattr(det, "decision_function"):
                raise InputError(f"detector for {name!r} has no decision_function; pass fitted detectors")
        try:
            self.rule = Rule(rule)
        except ValueError:
            raise InputError(f"rule must be 'any' or 'all', got {rule!r}") from None
        self.detectors = dict(detectors)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.detectors)

    def _codes(self, X: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(X, Mapping):
            raise InputError("ensemble inputs must be a dict {layer name: codes}")
        missing = [n for n in self.detectors if n not in X]
        if missing:
            raise InputError(f"no codes given for layers {missing}; expected keys {list(self.detectors)}")
        return X

    def fit(self, X: Mapping[str, Any], y: Any) -> "DetectorEnsemble":
        """Fit a clone of every detector on its layer's codes (same labels for all layers)."""
        X = self._codes(X)
        self.detectors = {n: clone(d).fit(X[n], y) for n, d in self.detectors.items()}
        return self

    def scores(self, X: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per-layer margins ``{layer: (N,)}``."""
        X = self._codes(X)
        out = {n: np.asarray(d.decision_function(X[n]), dtype=np.float64) for n, d in self.detectors.items()}
        sizes = {len(v) for v in out.values()}
        if len(sizes) > 1:
            raise InputError(f"layers were given different numbers of codes: { {n: len(v) for n, v in out.items()} }")
        return out

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """Max (any) or min (all) over per-layer margins."""
        stack = np.stack([np.asarray(scores[n], dtype=np.float64) for n in self.detectors])  # (layers, N)
        return stack.max(0) if self.rule is Rule.ANY else stack.min(0)

    def decision_function(self, X: Mapping[str, Any]) -> np.ndarray:
        return self.combine(self.scores(X))

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """1 = adversarial (rejected), 0 = natural."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def __repr__(self) -> str:
        return f"DetectorEnsemble(layers={list(self.detectors)}, rule={self.rule.value!r})"


__all__ = ["DetectorEnsemble", "Rule"]
