"""What the experiment reports, from the attack outcomes and the detectors' scores: results.json's numbers.

:func:`score_all` scores one fitted detector on every evaluation set, :func:`summarise` turns the
scores into detection metrics, the paper's rates at both operating points and the cross-attack
matrices, :func:`size_curve` fits the binary-code SVM on growing prefixes of the training data.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from .config import DETECTOR_TITLES, DETECTORS, ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["score_all", "size_curve", "summarise"]


def size_curve(cfg: ExperimentConfig, settings, outcomes, nat_codes) -> list[dict[str, Any]]:
    """Binary-code SVM trained on the first n natural + n adversarial training examples, for each n.

    Prefixes of the stratified order, so every size is class-balanced and each contains the
    smaller ones; the test set and the calibration images are the same for every n.
    """
    from ..metrics import detection_metrics, threshold_at_fpr
    from .units import fit_svm

    kind, rows = "svm-binary", []
    nat_fit = nat_codes["fit"][kind]
    for s in settings:
        o_tr, o_te = outcomes[s.key]["train"], outcomes[s.key]["test"]
        adv_fit, adv_te = o_tr.codes[kind][o_tr.success], o_te.codes[kind][o_te.success]
        for n in sorted(cfg.size_curve):
            if n > min(len(nat_fit), len(adv_fit)):
                rows.append({"attack": s.key, "label": s.label, "n_per_class": n, "available": False,
                             "natural_available": int(len(nat_fit)), "adversarial_available": int(len(adv_fit))})
                continue
            t0 = time.time()
            det = fit_svm(np.concatenate([nat_fit[:n], adv_fit[:n]]), np.r_[np.zeros(n, int), np.ones(n, int)],
                          cfg.svm_params(2))
            fit_s = time.time() - t0
            nat_s, adv_s = det.decision_function(nat_codes["test"][kind]), det.decision_function(adv_te)
            t = threshold_at_fpr(det.decision_function(nat_codes["cal"][kind]), cfg.fpr)
            dm, cal = detection_metrics(nat_s, adv_s, 0.0), detection_metrics(nat_s, adv_s, t)
            rows.append({"attack": s.key, "label": s.label, "n_per_class": n, "available": True, "auc": dm.auc,
                         "tpr_at_5fpr": dm.tpr_at_5fpr, "balanced_accuracy": dm.balanced_accuracy,
                         "calibrated_tpr": cal.tpr, "calibrated_fpr": cal.fpr, "gamma": det.gamma_, "C": det.C_,
                         "solver": getattr(det, "solver_", "exact"), "fit_seconds": round(fit_s, 2)})
            log.info("size curve %s n=%d: AUC %.3f (fit %.1f s)", s.label, n, dm.auc, fit_s)
    return rows


def score_all(score_fn, sets: dict[str, Any], settings) -> dict[str, Any]:
    """Scores of one fitted detector on every evaluation set (an array or None per set).

    ``natural``: natural test images; ``calibration``: held-out natural training images (the
    threshold at the target FPR is read from these); ``misclassified_clean``: clean test images the
    classifier gets wrong; ``adversarial[key]``: successful attacks; ``all_attempts[key]``: every
    attempt (the paper's rates count them all).
    """
    def score(v) -> np.ndarray:
        return np.asarray(score_fn(v), dtype=float) if v is not None and len(v) else np.zeros(0)

    return {"natural": score(sets["natural"]), "calibration": score(sets["cal"]),
            "misclassified_clean": score(sets["miss"]),
            "adversarial": {t.key: score(sets["adv"][t.key]) for t in settings},
            "all_attempts": {t.key: score(sets["all"][t.key]) for t in settings}}


def summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean,
               thresholds_at_fpr) -> dict[str, Any]:
    from ..cross_attack import cross_attack_matrix
    from ..metrics import detection_metrics, safetynet_rates
    from ..evaluation.report import config_record

    def median(v: np.ndarray) -> float:
        return float(np.median(v)) if len(v) else math.nan

    attacks = []
    for s in settings:
        te, tr = outcomes[s.key]["test"], outcomes[s.key]["train"]
        ok = te.success
        attacks.append({
            "key": s.key, "label": s.label, "family": s.family, "eps": s.eps, "params": dict(s.params), "top_k": s.top_k,
            "success_rate_test": float(ok.mean()), "success_rate_train": float(tr.success.mean()),
            "adversarial_test": int(ok.sum()), "adversarial_train": int(tr.success.sum()),
            "median_l2": median(te.l2[ok]), "median_linf": median(te.linf[ok]),
            "seconds": round(te.seconds + tr.seconds, 1),
        })
        if te.success_top5 is not None:
            attacks[-1].update({"success_rate_test_top1": float((te.pred != te.y).mean()),
                                "success_rate_test_top5": float(te.success_top5.mean()),
                                "median_l2_top5": median(te.l2[te.success_top5])})
    keys = [s.key for s in usable]

    def operating_point(sc: dict[str, Any], key: str, threshold: float) -> dict[str, Any]:
        """Detection and the paper's rates at one threshold (> threshold = rejected)."""
        dm = detection_metrics(sc["natural"], sc["adversarial"][key], threshold=threshold)
        o = outcomes[key]["test"]
        rates = safetynet_rates(o.y, o.pred, sc["all_attempts"][key] > threshold)
        return {"threshold": float(threshold), "accuracy": dm.accuracy, "balanced_accuracy": dm.balanced_accuracy,
                "tpr": dm.tpr, "fpr": dm.fpr, **rates}

    detectors: dict[str, Any] = {}
    for d in DETECTORS:
        same = []
        for s in usable:
            sc = scores[d][s.key]
            zero = operating_point(sc, s.key, 0.0)
            cal = operating_point(sc, s.key, thresholds_at_fpr[d][s.key])
            dm = detection_metrics(sc["natural"], sc["adversarial"][s.key], threshold=0.0)
            same.append({"attack": s.key, "label": s.label, "auc": dm.auc, "tpr_at_1fpr": dm.tpr_at_1fpr,
                         "tpr_at_5fpr": dm.tpr_at_5fpr,
                         "adversary_success": float(outcomes[s.key]["test"].success.mean()),
                         **{k: v for k, v in zero.items() if k != "threshold"},
                         "calibrated": cal, **fitted_params[d].get(s.key, {})})
        matrix = cross_attack_matrix({s.key: {t.key: (scores[d][s.key]["natural"], scores[d][s.key]["adversarial"][t.key])
                                              for t in usable} for s in usable}) if usable else None
        cross = {"train": keys, "test": keys, **({m: matrix[m].tolist() for m in ("auc", "balanced_accuracy", "tpr_at_5fpr")}
                                                 if matrix is not None else {})}
        nat = scores[d][usable[0].key]["natural"] if usable else np.zeros(0)

        def rejected(v: np.ndarray, t: float) -> float:
            return float((v > t).mean()) if len(v) else math.nan

        detectors[d] = {
            "title": DETECTOR_TITLES[d], "same_attack": same, "cross_attack": cross,
            "natural_false_rejection": {s.key: rejected(scores[d][s.key]["natural"], 0.0) for s in usable},
            "natural_false_rejection_calibrated": {s.key: rejected(scores[d][s.key]["natural"], thresholds_at_fpr[d][s.key])
                                                   for s in usable},
            "misclassified_clean_rejected": {s.key: rejected(scores[d][s.key]["misclassified_clean"], 0.0) for s in usable},
            "misclassified_clean_rejected_calibrated": {
                s.key: rejected(scores[d][s.key]["misclassified_clean"], thresholds_at_fpr[d][s.key]) for s in usable},
            "natural_test_examples": int(len(nat))}
    conf_rows = []
    for s in settings:
        adv = conf_scores["adversarial"][s.key]
        if len(adv) >= 1:
            dm = detection_metrics(conf_scores["natural"], adv, threshold=float(conf.threshold_))
            conf_rows.append({"attack": s.key, "label": s.label, "auc": dm.auc, "tpr": dm.tpr, "fpr": dm.fpr,
                              "tpr_at_5fpr": dm.tpr_at_5fpr, "balanced_accuracy": dm.balanced_accuracy})
    return {"config": config_record(cfg), "clean": clean, "attacks": attacks, "detectors": detectors,
            "operating_point": {"fpr": cfg.fpr, "calibrated_on": "held-out natural training images"},
            "confidence_baseline": {"threshold": float(conf.threshold_), "rows": conf_rows}}
