"""Cross-attack generalisation: a detector trained on one attack, tested on every other (the paper's Figure 2C)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .metrics import _scores, detection_metrics

__all__ = ["CrossAttackMatrix", "cross_attack_matrix", "score_cross_attack"]


_MATRIX_METRICS = ("auc", "accuracy", "balanced_accuracy", "tpr_at_5fpr", "tpr_at_1fpr")


@dataclass(frozen=True, eq=False)
class CrossAttackMatrix:
    """Detector trained on attack ``rows[i]``, tested on attack ``cols[j]``: ``values[m][i, j]``."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    values: Mapping[str, np.ndarray]

    def __getitem__(self, metric: str) -> np.ndarray:
        if metric not in self.values:
            raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(self.values)}")
        return self.values[metric]

    def as_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "cols": list(self.cols),
                "values": {m: v.tolist() for m, v in self.values.items()}}


def cross_attack_matrix(scores: Mapping[str, Mapping[str, tuple[object, object]]],
                        thresholds: Mapping[str, float] | float = 0.0) -> CrossAttackMatrix:
    """Matrices of AUC, accuracy, balanced accuracy, TPR@5%/1% FPR over (train attack, test attack).

    ``scores[train][test] = (natural scores, adversarial scores)`` of the detector trained on
    ``train`` applied to the test set of ``test`` (natural scores are per detector, since each
    detector scores the natural images differently). Every row must have the same test
    attacks. ``thresholds``: one operating point for all, or one per train attack (e.g.
    calibrated with :func:`threshold_at_fpr` on validation data).
    """
    if not isinstance(scores, Mapping) or not scores:
        raise InputError("scores must be a non-empty mapping {train_attack: {test_attack: (natural, adversarial)}}")
    rows = tuple(str(r) for r in scores)
    cols: list[str] = []
    for r in scores.values():
        if not isinstance(r, Mapping) or not r:
            raise InputError("every row of scores must be a non-empty mapping {test_attack: (natural, adversarial)}")
        cols += [str(c) for c in r if str(c) not in cols]
    for name, r in zip(rows, scores.values()):
        missing = [c for c in cols if c not in {str(k) for k in r}]
        if missing:
            raise InputError(f"detector trained on {name!r} has no scores for test attack(s) {missing}; score it on every test set")
    values = {m: np.full((len(rows), len(cols)), np.nan) for m in _MATRIX_METRICS}
    for i, (name, r) in enumerate(zip(rows, scores.values())):
        t = thresholds.get(name, None) if isinstance(thresholds, Mapping) else thresholds
        if t is None:
            raise InputError(f"thresholds has no entry for train attack {name!r}")
        by_name = {str(k): v for k, v in r.items()}
        for j, c in enumerate(cols):
            pair = by_name[c]
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"scores[{name!r}][{c!r}] must be a pair (natural scores, adversarial scores)")
            d = detection_metrics(pair[0], pair[1], threshold=t)
            for m in _MATRIX_METRICS:
                values[m][i, j] = getattr(d, m)
    return CrossAttackMatrix(rows, tuple(cols), values)


def score_cross_attack(scorers: Mapping[str, Any], test_sets: Mapping[str, tuple[object, object]]
                       ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Apply each fitted detector to each test set: the input of :func:`cross_attack_matrix`.

    ``scorers[train]`` is a fitted detector (its ``decision_function`` is used) or a callable
    returning one score per input; ``test_sets[test] = (natural inputs, adversarial inputs)``.
    """
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, det in scorers.items():
        fn = getattr(det, "decision_function", det)
        if not callable(fn):
            raise InputError(f"scorer {name!r} is neither a detector with decision_function nor a callable")
        out[str(name)] = {str(t): (_scores(fn(nat), f"scores of {name!r} on natural {t!r}"),
                                   _scores(fn(adv), f"scores of {name!r} on adversarial {t!r}"))
                          for t, (nat, adv) in test_sets.items()}
    return out
