"""Detection and rejection metrics, as pure functions over score and label arrays.

Conventions (the same everywhere in safetynet):

* a detector score is higher for "more adversarial"; the adversarial (or fake) label is 1;
* ROC curves use sklearn's rule "flag when score >= threshold", which traces every operating
  point a deterministic threshold can reach;
* a single operating point (``detection_metrics(..., threshold=t)``, :func:`threshold_at_fpr`)
  uses the rule of sklearn's ``predict``: "flag when score > threshold", so a detector whose
  ``decision_function`` is centred on 0 is evaluated at ``threshold=0.0`` exactly as its
  ``predict`` decides.

Inputs may be numpy arrays, torch tensors or sequences; NaN scores are an error (a detector that
returns NaN is broken, and silently ranking NaN would hide it), ``±inf`` scores are allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from .errors import InputError

__all__ = [
    "DetectionMetrics",
    "roc_curve",
    "roc_auc",
    "tpr_at_fpr",
    "threshold_at_fpr",
    "detection_metrics",
    "safetynet_rates",
    "RATE_LABELS",
    "adversary_success_rate",
]


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: object, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency; keep metrics importable without it
        pass
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and other non-array inputs
        raise InputError(f"{name} must be a 1-D array of numbers, got {type(x).__name__} ({exc})") from None


def _scores(x: object, name: str, allow_empty: bool = False) -> np.ndarray:
    """A 1-D float64 array without NaN; the error names the argument and the fix."""
    a = _to_numpy(x, name)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)  # (N, 1) column of scores, as some detectors return
    if a.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of scores, got shape {a.shape}; pass one score per example")
    if a.dtype != bool and not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise InputError(f"{name} must hold real numbers, got complex values")
    a = a.astype(np.float64, copy=False)
    if not allow_empty and a.size == 0:
        raise InputError(f"{name} is empty; metrics need at least one natural and one adversarial score")
    if np.isnan(a).any():
        raise InputError(f"{name} contains {int(np.isnan(a).sum())} NaN score(s); the detector is broken for those inputs, fix it before evaluating")
    return a


def _labels(x: object, name: str, n: int | None = None) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.size == 0:
        a = a.astype(np.int64)
    if n is not None and a.shape[0] != n:
        raise InputError(f"{name} has {a.shape[0]} entries but y_true has {n}; pass one entry per example")
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise InputError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _mask(x: object, name: str, n: int) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != 1 or a.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},) to match y_true, got {a.shape}")
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.number) and np.all(np.isin(a, (0, 1))):
        return a.astype(bool)
    raise InputError(f"{name} must be booleans (True = rejected / flagged) or 0/1, got dtype {a.dtype}")


def _rate(num: int, den: int) -> float:
    """``num / den``; NaN when the denominator is empty (undefined, written as null in JSON)."""
    return float(num) / den if den else math.nan


def _check_fpr(fpr: float, name: str = "fpr") -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.floating)) or not (0.0 <= float(fpr) <= 1.0):
        raise InputError(f"{name} must be a number in [0, 1], got {fpr!r}")
    return float(fpr)


# --------------------------------------------------------------------------- ROC


def roc_curve(scores_natural: object, scores_adversarial: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` for "adversarial when score >= threshold".

    Thresholds are the distinct scores in decreasing order, preceded by ``+inf`` (no example
    flagged), so the curve runs from (0, 0) to (1, 1). Unlike sklearn's default
    (``drop_intermediate=True``) every distinct threshold is kept; the points equal
    ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)``.
    """
    nat = _scores(scores_natural, "scores_natural")
    adv = _scores(scores_adversarial, "scores_adversarial")
    scores = np.concatenate([nat, adv])
    is_adv = np.concatenate([np.zeros(nat.size, bool), np.ones(adv.size, bool)])
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], is_adv[order]
    # The last index of each run of equal scores: all tied examples switch together.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    fpr = np.r_[0.0, fp / nat.size]
    tpr = np.r_[0.0, tp / adv.size]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def roc_auc(scores_natural: object, scores_adversarial: object) -> float:
    """Area under the ROC curve = P(adv score > nat score) + ½ P(tie) (Mann-Whitney U / (n₀ n₁)).

    Computed from mid-ranks, which equals the trapezoidal area under :func:`roc_curve`.
    """
    nat = _scores(scores_natural, "scores_natural")
    adv = _scores(scores_adversarial, "scores_adversarial")
    ranks = rankdata(np.concatenate([nat, adv]), method="average")
    u = ranks[nat.size:].sum() - adv.size * (adv.size + 1) / 2.0
    return float(u / (nat.size * adv.size))


def tpr_at_fpr(scores_natural: object, scores_adversarial: object, target_fpr: float) -> float:
    """The best TPR among ROC operating points with FPR <= ``target_fpr``.

    The threshold is chosen on the very scores being evaluated (no interpolation between ROC
    points, no randomised thresholds), so this is the curve's value, slightly optimistic as an
    estimate of a deployed detector. For an honest number, calibrate a threshold on a validation
    split with :func:`threshold_at_fpr` and report ``detection_metrics(test..., threshold=t)``.
    """
    target = _check_fpr(target_fpr, "target_fpr")
    fpr, tpr, _ = roc_curve(scores_natural, scores_adversarial)
    # Allow for float round-off: k/n <= target is judged on the counts, not the quotient.
    n_nat = _scores(scores_natural, "scores_natural").size
    ok = np.rint(fpr * n_nat) <= math.floor(target * n_nat + 1e-9)
    return float(tpr[ok].max())


def threshold_at_fpr(scores_natural: object, fpr: float) -> float:
    """The smallest threshold ``t`` with ``mean(scores_natural > t) <= fpr``.

    With the rule "adversarial when score > t", ``t`` is the (k+1)-th largest natural score,
    ``k = floor(fpr * n)``: at most ``k`` natural examples lie strictly above it (fewer when
    scores tie at ``t``). ``fpr = 1`` gives ``-inf`` (flag everything). Calibrate on a
    validation split, never on the test scores you report.
    """
    target = _check_fpr(fpr)
    nat = np.sort(_scores(scores_natural, "scores_natural"))[::-1]  # descending
    k = math.floor(target * nat.size + 1e-9)  # tolerance: 0.05 * 100 must give 5, not 4
    if k >= nat.size:
        return -math.inf
    return float(nat[k])


# --------------------------------------------------------------------------- one detector, one attack


@dataclass(frozen=True, eq=False)
class DetectionMetrics:
    """Detector quality on natural (label 0) versus adversarial (label 1) scores.

    ``accuracy`` = (TN + TP) / (n_natural + n_adversarial) at ``threshold`` (rule: score > t);
    ``balanced_accuracy`` = (TPR + TNR) / 2, which equals ``accuracy`` on balanced sets
    (the "detection accuracy" of Metzen et al. and the SafetyNet paper's Figure 2 use equal
    numbers of natural and adversarial examples). ``tpr``/``fpr`` are at ``threshold``;
    ``tpr_at_1fpr``/``tpr_at_5fpr`` come from :func:`tpr_at_fpr`; ``roc_*`` from :func:`roc_curve`.
    """

    n_natural: int
    n_adversarial: int
    threshold: float
    accuracy: float
    balanced_accuracy: float
    tpr: float
    fpr: float
    auc: float
    tpr_at_1fpr: float
    tpr_at_5fpr: float
    roc_fpr: np.ndarray = field(repr=False)
    roc_tpr: np.ndarray = field(repr=False)
    roc_thresholds: np.ndarray = field(repr=False)

    def as_dict(self, include_roc: bool = False) -> dict[str, Any]:
        """Plain Python numbers (JSON-ready); the ROC arrays only when ``include_roc``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("roc_"):
                if include_roc:
                    out[f.name] = [float(a) for a in v]
            else:
                out[f.name] = v
        return out


def detection_metrics(scores_natural: object, scores_adversarial: object, threshold: float = 0.0) -> DetectionMetrics:
    """All detection numbers for one detector on one natural / adversarial pair of score sets.

    ``threshold`` is the operating point for accuracy, TPR and FPR ("adversarial when
    score > threshold"; 0.0 suits a ``decision_function`` centred on 0, as an SVM's).
    """
    nat = _scores(scores_natural, "scores_natural")
    adv = _scores(scores_adversarial, "scores_adversarial")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) or math.isnan(threshold):
        raise InputError(f"threshold must be a number, not NaN, got {threshold!r}")
    t = float(threshold)
    tp = int((adv > t).sum())
    tn = int((nat <= t).sum())
    tpr, fpr = tp / adv.size, 1.0 - tn / nat.size
    roc_f, roc_t, roc_th = roc_curve(nat, adv)
    return DetectionMetrics(
        n_natural=int(nat.size),
        n_adversarial=int(adv.size),
        threshold=t,
        accuracy=(tp + tn) / (nat.size + adv.size),
        balanced_accuracy=(tpr + 1.0 - fpr) / 2.0,
        tpr=tpr,
        fpr=fpr,
        auc=roc_auc(nat, adv),
        tpr_at_1fpr=tpr_at_fpr(nat, adv, 0.01),
        tpr_at_5fpr=tpr_at_fpr(nat, adv, 0.05),
        roc_fpr=roc_f,
        roc_tpr=roc_t,
        roc_thresholds=roc_th,
    )


# --------------------------------------------------------------------------- classifier + detector

#: How reports print each rate of :func:`safetynet_rates` (one name per rate, everywhere).
RATE_LABELS = {
    "misclassified": "wrong",
    "misclassified_accepted": "W→A",  # wrong label, accepted: the adversary's success against the defence
    "correct_rejected": "T→T rej",  # right label, rejected: what the detector costs
    "rejected": "rejected",
    "detection_on_misclassified": "detected | wrong",
    "F->T": "F→T",  # binary tasks: a false example labelled true and accepted (per false example)
    "T->F": "T→F",  # a true example labelled false and accepted (per true example)
    "T->T reject": "T→T reject",  # a true example labelled true but rejected (per true example)
}


def safetynet_rates(y_true: object, y_pred: object, rejected: object,
                    positive_class: int | None = None) -> dict[str, float | int]:
    """What gets through SafetyNet (classifier + rejecting detector), as rates.

    Always returned (n = number of examples; NaN when a denominator is 0):

    * ``misclassified`` = #(pred != true) / n -- the adversary's success on the bare classifier;
    * ``misclassified_accepted`` = #(pred != true and not rejected) / n -- its success against
      SafetyNet (wrong answers that the detector lets through);
    * ``correct_rejected`` = #(pred == true and rejected) / n -- right answers thrown away;
    * ``rejected`` = #rejected / n;
    * ``detection_on_misclassified`` = #(pred != true and rejected) / #(pred != true).

    With ``positive_class`` (SceneProof: 1 = "true", a real scene), also the paper's Table 1/4
    rates. Our reading of the caption ("F→T means the rate at which false label images are
    classified as true and the detector does not spot"), with per-ground-truth denominators as
    in Table 3's worked example (23.5 % of zero-D images labelled true x 18 % not rejected =
    "a total of 4.2 % ... pass through SafetyNet with 'true' labels"):

    * ``F->T`` = #(true label false, predicted true, not rejected) / #(true label false);
    * ``T->F`` = #(true label true, predicted false, not rejected) / #(true label true);
    * ``T->T reject`` = #(true label true, predicted true, rejected) / #(true label true).

    "false" means any class other than ``positive_class``. For the bare classifier ("Ori" in
    Table 4) pass ``rejected`` all False.
    """
    yt = _labels(y_true, "y_true")
    n = yt.size
    if n == 0:
        raise InputError("y_true is empty; rates need at least one example")
    yp = _labels(y_pred, "y_pred", n)
    rej = _mask(rejected, "rejected", n)
    wrong = yp != yt
    out: dict[str, float | int] = {
        "n": n,
        "misclassified": _rate(int(wrong.sum()), n),
        "misclassified_accepted": _rate(int((wrong & ~rej).sum()), n),
        "correct_rejected": _rate(int((~wrong & rej).sum()), n),
        "rejected": _rate(int(rej.sum()), n),
        "detection_on_misclassified": _rate(int((wrong & rej).sum()), int(wrong.sum())),
    }
    if positive_class is not None:
        if isinstance(positive_class, bool) or not isinstance(positive_class, (int, np.integer)):
            raise InputError(f"positive_class must be an integer class label, got {positive_class!r}")
        is_t, pred_t = yt == positive_class, yp == positive_class
        n_t, n_f = int(is_t.sum()), int((~is_t).sum())
        out["n_true"], out["n_false"] = n_t, n_f
        out["F->T"] = _rate(int((~is_t & pred_t & ~rej).sum()), n_f)
        out["T->F"] = _rate(int((is_t & ~pred_t & ~rej).sum()), n_t)
        out["T->T reject"] = _rate(int((is_t & pred_t & rej).sum()), n_t)
    return out


def adversary_success_rate(y_true: object, y_pred: object, rejected: object | None = None,
                           y_pred_clean: object | None = None, targets: object | None = None) -> float:
    """Fraction of attacked examples on which the adversary wins.

    A win is ``y_pred != y_true`` (untargeted) or ``y_pred == targets`` (targeted), and, when
    ``rejected`` is given, the detector must also not reject the example (a type-II success).
    With ``y_pred_clean`` (the classifier's labels on the unattacked images), the denominator is
    the examples the classifier got right before the attack, the usual convention (an already
    misclassified image is no success of the adversary); otherwise it is all examples.
    """
    yt = _labels(y_true, "y_true")
    n = yt.size
    if n == 0:
        raise InputError("y_true is empty; success rates need at least one example")
    yp = _labels(y_pred, "y_pred", n)
    win = (yp == _labels(targets, "targets", n)) if targets is not None else (yp != yt)
    if rejected is not None:
        win &= ~_mask(rejected, "rejected", n)
    if y_pred_clean is not None:
        keep = _labels(y_pred_clean, "y_pred_clean", n) == yt
        if not keep.any():
            raise InputError("the classifier gets no clean example right, so the success rate over correctly classified examples is undefined")
        return float(win[keep].mean())
    return float(win.mean())
