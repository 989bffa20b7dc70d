"""Detection metrics against scikit-learn and against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from safetynet.cross_attack import cross_attack_matrix, score_cross_attack
from safetynet.errors import InputError
from safetynet.metrics import (
    adversary_success_rate,
    detection_metrics,
    roc_auc,
    roc_curve,
    safetynet_rates,
    threshold_at_fpr,
    tpr_at_fpr,
)

# The tiny example used by several tests.
NAT = [0.1, 0.4, 0.35, 0.8]
ADV = [0.9, 0.4, 0.7]


def _sk(nat, adv):
    y = np.r_[np.zeros(len(nat)), np.ones(len(adv))]
    return y, np.r_[nat, adv]


# --------------------------------------------------------------------------- against sklearn


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_roc_and_auc_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    if ties:  # integer scores: many ties across and within classes
        nat, adv = rng.integers(0, 6, 300).astype(float), rng.integers(2, 9, 200).astype(float)
    else:
        nat, adv = rng.normal(0, 1, 300), rng.normal(0.8, 1, 200)
    y, s = _sk(nat, adv)
    fpr, tpr, th = roc_curve(nat, adv)
    sk_fpr, sk_tpr, sk_th = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert th[0] == np.inf
    np.testing.assert_array_equal(th[1:], sk_th[1:])
    assert roc_auc(nat, adv) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # TPR at a FPR budget: the best ROC point within budget, from sklearn's curve.
    for target in (0.0, 0.01, 0.05, 0.2, 1.0):
        ref = sk_tpr[sk_fpr <= target + 1e-12].max()
        assert tpr_at_fpr(nat, adv, target) == pytest.approx(ref)


def test_torch_and_list_inputs():
    # float64 on both sides: float32(0.4) != 0.4 would break the tie of the hand example.
    nat, adv = torch.tensor(NAT, dtype=torch.float64), torch.tensor(ADV, dtype=torch.float64)
    assert roc_auc(nat, adv) == roc_auc(NAT, np.array(ADV))
    assert roc_auc(np.array(NAT)[:, None], ADV) == roc_auc(NAT, ADV)  # (N, 1) columns are accepted


# --------------------------------------------------------------------------- by hand


def test_tiny_example_by_hand():
    # AUC = P(adv > nat) + ½ P(tie) over the 4 x 3 = 12 pairs:
    #   adv 0.9 beats all 4 nat                      -> 4
    #   adv 0.4 beats 0.1, 0.35, ties 0.4, loses 0.8 -> 2.5
    #   adv 0.7 beats 0.1, 0.4, 0.35, loses 0.8      -> 3
    # AUC = 9.5 / 12.
    assert roc_auc(NAT, ADV) == pytest.approx(9.5 / 12)
    # ROC: scores in decreasing order 0.9a 0.8n 0.7a 0.4a 0.4n 0.35n 0.1n (0.4 tie moves together).
    fpr, tpr, th = roc_curve(NAT, ADV)
    np.testing.assert_allclose(th, [np.inf, 0.9, 0.8, 0.7, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 4, 1 / 4, 2 / 4, 3 / 4, 1])
    # At threshold 0.5 (rule score > t): adv flagged 0.9, 0.7 -> TP 2 of 3; nat flagged 0.8 -> FP 1 of 4.
    m = detection_metrics(NAT, ADV, threshold=0.5)
    assert (m.tpr, m.fpr) == pytest.approx((2 / 3, 1 / 4))
    assert m.accuracy == pytest.approx((2 + 3) / 7)  # TP + TN over all 7
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)  # = 17/24
    # 1 % and 5 % of 4 naturals allow 0 false positives: only 0.9 (above 0.8) is caught -> 1/3.
    assert m.tpr_at_1fpr == pytest.approx(1 / 3) and m.tpr_at_5fpr == pytest.approx(1 / 3)
    # 25 % allows one: threshold 0.7 flags 0.9, 0.7 and nat 0.8 -> TPR 2/3.
    assert tpr_at_fpr(NAT, ADV, 0.25) == pytest.approx(2 / 3)
    assert m.n_natural == 4 and m.n_adversarial == 3 and m.auc == pytest.approx(9.5 / 12)
    d = m.as_dict()
    assert "roc_fpr" not in d and m.as_dict(include_roc=True)["roc_tpr"][-1] == 1.0


def test_threshold_at_fpr_by_hand():
    # Naturals descending 0.8, 0.4, 0.35, 0.1; k = floor(fpr * 4) allowed false positives;
    # t = the (k+1)-th largest, flag when score > t.
    assert threshold_at_fpr(NAT, 0.0) == 0.8  # nothing above 0.8
    assert threshold_at_fpr(NAT, 0.25) == 0.4  # only 0.8 above
    assert threshold_at_fpr(NAT, 0.5) == 0.35
    assert threshold_at_fpr(NAT, 0.3) == 0.4  # floor(1.2) = 1
    assert threshold_at_fpr(NAT, 1.0) == -math.inf
    # 0.05 * 100 must count as 5 false positives, not 4 (float round-off).
    nat = np.arange(100.0)
    t = threshold_at_fpr(nat, 0.05)
    assert t == 94.0 and (nat > t).mean() == 0.05
    # Ties at the cut: [1, 1, 1, 0] at 25 %: any t < 1 flags three, so t = 1 flags none.
    assert threshold_at_fpr([1.0, 1.0, 1.0, 0.0], 0.25) == 1.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 10, 57).astype(float)
        f = rng.uniform()
        t = threshold_at_fpr(s, f)
        assert (s > t).mean() <= f + 1e-12
        # The smallest such threshold: any lower threshold flags at least the examples scoring
        # t, which exceeds the budget.
        lower = s[s < t]
        if lower.size:
            assert (s > lower.max()).mean() > f


# --------------------------------------------------------------------------- degenerate inputs


def test_degenerate_inputs_are_clear_errors():
    with pytest.raises(InputError, match="scores_adversarial is empty"):
        detection_metrics([0.1, 0.2], [])  # all one class
    with pytest.raises(InputError, match="scores_natural is empty"):
        roc_auc([], [0.3])
    with pytest.raises(InputError, match="NaN"):
        roc_auc([0.1, np.nan], [0.2])
    with pytest.raises(InputError, match="NaN"):
        detection_metrics([0.1], [0.2], threshold=float("nan"))
    with pytest.raises(InputError, match="1-D"):
        roc_curve(np.zeros((3, 2)), [1.0])
    with pytest.raises(InputError, match="real numbers"):
        roc_auc(["a", "b"], [1.0])
    with pytest.raises(InputError, match="fpr"):
        threshold_at_fpr([0.1], 1.5)
    with pytest.raises(InputError, match="target_fpr"):
        tpr_at_fpr([0.1], [0.2], -0.1)
    # Infinite scores are legal and rank as expected.
    assert roc_auc([-np.inf, 0.0], [np.inf, 1.0]) == 1.0
    # Constant scores: AUC 1/2 (all ties), not an error.
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5


# --------------------------------------------------------------------------- SafetyNet rates


def test_safetynet_rates_binary_by_hand():
    # SceneProof: 1 = "true" (real scene). Examples 0-3 are true, 4-9 are false.
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 0, 1, 1, 1, 0, 0, 1, 0]
    rejected = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    r = safetynet_rates(y_true, y_pred, np.array(rejected, bool), positive_class=1)
    # T->F: true, predicted false, not rejected: example 2 -> 1 of 4 true.
    assert r["T->F"] == pytest.approx(1 / 4)
    # T->T reject: true, predicted true, rejected: example 1 -> 1 of 4 true.
    assert r["T->T reject"] == pytest.approx(1 / 4)
    # F->T: false, predicted true (4, 5, 8), not rejected (5, 8) -> 2 of 6 false.
    assert r["F->T"] == pytest.approx(2 / 6)
    assert (r["n_true"], r["n_false"], r["n"]) == (4, 6, 10)
    # General rates over all 10: wrong = {2, 4, 5, 8}; rejected = {1, 4, 7}.
    assert r["misclassified"] == pytest.approx(4 / 10)
    assert r["misclassified_accepted"] == pytest.approx(3 / 10)  # 2, 5, 8
    assert r["correct_rejected"] == pytest.approx(2 / 10)  # 1, 7
    assert r["rejected"] == pytest.approx(3 / 10)
    assert r["detection_on_misclassified"] == pytest.approx(1 / 4)  # 4 of {2, 4, 5, 8}
    # Bare classifier (Table 4 "Ori"): nothing rejected.
    ori = safetynet_rates(y_true, y_pred, np.zeros(10, bool), positive_class=1)
    assert ori["F->T"] == pytest.approx(3 / 6) and ori["T->F"] == pytest.approx(1 / 4) and ori["T->T reject"] == 0


def test_safetynet_rates_multiclass_and_empty_denominators():
    y_true = torch.tensor([0, 1, 2, 3, 4])
    y_pred = torch.tensor([0, 2, 2, 1, 4])
    rejected = torch.tensor([False, True, False, False, True])
    r = safetynet_rates(y_true, y_pred, rejected)
    assert "F->T" not in r
    assert r["misclassified"] == pytest.approx(2 / 5)  # examples 1, 3
    assert r["misclassified_accepted"] == pytest.approx(1 / 5)  # 3
    assert r["correct_rejected"] == pytest.approx(1 / 5)  # 4
    assert r["detection_on_misclassified"] == pytest.approx(1 / 2)
    # No misclassification / only true examples: undefined rates are NaN, not errors.
    r = safetynet_rates([1, 1], [1, 1], [False, True], positive_class=1)
    assert math.isnan(r["detection_on_misclassified"]) and math.isnan(r["F->T"])
    with pytest.raises(InputError, match="entries"):
        safetynet_rates([1, 0], [1], [0, 0])
    with pytest.raises(InputError, match="rejected"):
        safetynet_rates([1, 0], [1, 0], [0.5, 0])
    with pytest.raises(InputError, match="empty"):
        safetynet_rates([], [], [])
    with pytest.raises(InputError, match="integer"):
        safetynet_rates([0.5, 1], [1, 1], [0, 0])


def test_adversary_success_rate_by_hand():
    y = [0, 1, 2, 3]
    adv_pred = [1, 1, 0, 0]  # wrong on 0, 2, 3
    assert adversary_success_rate(y, adv_pred) == pytest.approx(3 / 4)
    # Detector rejects 2: type-II success only on 0 and 3.
    assert adversary_success_rate(y, adv_pred, rejected=[0, 0, 1, 0]) == pytest.approx(2 / 4)
    # Clean predictions wrong on 3: count over the 3 correctly classified (0, 1, 2): wins 0, 2.
    assert adversary_success_rate(y, adv_pred, y_pred_clean=[0, 1, 2, 0]) == pytest.approx(2 / 3)
    # Targeted: target 0 reached on 2 and 3.
    assert adversary_success_rate(y, adv_pred, targets=[1, 2, 0, 0]) == pytest.approx(3 / 4)  # 0 -> 1 too
    with pytest.raises(InputError, match="no clean example right"):
        adversary_success_rate(y, adv_pred, y_pred_clean=[1, 0, 0, 0])


# --------------------------------------------------------------------------- cross-attack matrix


def test_cross_attack_matrix():
    rng = np.random.default_rng(0)
    nat_a, nat_b = rng.normal(0, 1, 100), rng.normal(0, 1, 100)
    scores = {
        "fgsm": {"fgsm": (nat_a, rng.normal(3, 1, 80)), "pgd": (nat_a, rng.normal(1, 1, 80))},
        "pgd": {"pgd": (nat_b, rng.normal(2, 1, 80)), "fgsm": (nat_b, rng.normal(0.5, 1, 80))},
    }
    m = cross_attack_matrix(scores, thresholds={"fgsm": 0.0, "pgd": 1.0})
    assert m.rows == ("fgsm", "pgd") and m.cols == ("fgsm", "pgd")
    for i, r in enumerate(m.rows):
        for j, c in enumerate(m.cols):
            nat, adv = scores[r][c]
            d = detection_metrics(nat, adv, threshold={"fgsm": 0.0, "pgd": 1.0}[r])
            y, s = _sk(nat, adv)
            assert m["auc"][i, j] == pytest.approx(roc_auc_score(y, s))
            assert m["accuracy"][i, j] == d.accuracy and m["tpr_at_5fpr"][i, j] == d.tpr_at_5fpr
            assert m["balanced_accuracy"][i, j] == d.balanced_accuracy
    assert m["auc"][0, 0] > m["auc"][0, 1]  # the familiar attack is easier
    assert m.as_dict()["values"]["auc"][1][0] == m["auc"][1, 0]
    with pytest.raises(InputError, match="no scores for test attack"):
        cross_attack_matrix({"a": {"x": (nat_a, nat_b)}, "b": {"y": (nat_a, nat_b)}})
    with pytest.raises(InputError, match="thresholds"):
        cross_attack_matrix({"a": {"x": (nat_a, nat_b)}}, thresholds={"b": 0.0})
    with pytest.raises(InputError, match="unknown metric"):
        m["f1"]


def test_score_cross_attack_feeds_the_matrix():
    class Det:
        def __init__(self, shift):
            self.shift = shift

        def decision_function(self, x):
            return np.asarray(x, float).sum(1) - self.shift

    sets = {"a": (np.zeros((5, 2)), np.ones((4, 2))), "b": (np.zeros((5, 2)), 2 * np.ones((4, 2)))}
    s = score_cross_attack({"a": Det(0.5), "b": lambda x: -np.asarray(x, float).sum(1)}, sets)
    np.testing.assert_allclose(s["a"]["b"][1], [3.5] * 4)
    m = cross_attack_matrix(s)
    np.testing.assert_allclose(m["auc"], [[1.0, 1.0], [0.0, 0.0]])
