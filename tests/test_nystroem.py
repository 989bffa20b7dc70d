"""Scalable SVM training: Nyström features + linear SVM folded into the detector's RBF expansion, and
parity random features for binary codes.

References are independent of the code under test: numpy for kernels and parities, scikit-learn's
``SVC`` (libsvm) for the exact SVM, ``LinearSVC`` on the features for the folded model, exact
enumeration over all subsets for the parity-feature identity.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC
from sklearn.utils._param_validation import InvalidParameterError

import safetynet.detectors.svm as svm
from safetynet.attacks.detector_scores import rbf_score_torch
from safetynet.detectors import CodeSVMDetector
from safetynet.detectors.nystroem import NystroemMap, ParityFeatures, fit_nystroem_svm, select_landmarks
from safetynet.errors import InputError


def latent_codes(n: int, d: int, seed: int = 0, shift: float = 0.35, rank: int = 8):
    """Binary codes from a latent factor model (units correlated, as in real activation codes); the
    adversarial class (1) is shifted along one latent direction and nudged per unit, and the classes
    overlap (held-out AUC ~0.8)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rank, d)) * 1.5
    bias = rng.normal(size=d)
    direction = rng.normal(size=rank)
    direction /= np.linalg.norm(direction)
    nudge = rng.normal(size=d) * 0.15
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, rank)) + 2 * shift * np.outer(2 * y - 1, direction)
    logits = z @ W + bias + np.outer(y, nudge)
    X = (rng.random((n, d)) < 1 / (1 + np.exp(-logits))).astype(np.uint8)
    return X, y


def np_sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A, B = A.astype(np.int64), B.astype(np.int64)
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)


def median_gamma(X: np.ndarray, multiplier: float = 1.0) -> float:
    D = np_sqdist(X[:200], X[:200])
    return multiplier / float(np.median(D[~np.eye(len(D), dtype=bool)]))


def test_folded_expansion_equals_linear_model():
    """The deployed RBF expansion (landmarks, dual_coef_, intercept_) scores exactly what LinearSVC
    learnt on the Nyström features."""
    X, y = latent_codes(1100, 128, seed=1)
    X, y, Xq = X[:800], y[:800], X[800:]
    gamma = median_gamma(X)
    res = fit_nystroem_svm(X, y, gamma, C=1.0, n_components=200, random_state=0)
    linear = res.linear.decision_function(res.feature_map.transform(Xq))
    det = CodeSVMDetector(gamma=gamma, C=1.0, solver="nystroem", n_components=200, random_state=0).fit(X, y)
    deployed = det.decision_function(Xq)
    assert det.solver_ == "nystroem" and det.n_components_ == 200 and det.support_vectors_.shape == (200, 128)
    assert np.abs(deployed - linear).max() <= 1e-6 * np.abs(linear).max()
    # the expansion written out with numpy, independent of CodeRBFKernel
    by_hand = np.exp(-gamma * np_sqdist(Xq, det.support_vectors_)) @ det.dual_coef_[0] + det.intercept_[0]
    np.testing.assert_allclose(deployed, by_hand, rtol=0, atol=1e-9 * np.abs(by_hand).max())
    np.testing.assert_array_equal(det.predict(Xq), res.linear.predict(res.feature_map.transform(Xq)))
    # the differentiable score the type-II / adaptive attacks use is the same trained model
    attack_score = rbf_score_torch(torch.as_tensor(Xq), det).numpy()
    assert np.abs(attack_score - linear).max() <= 1e-6 * np.abs(linear).max()


@pytest.mark.parametrize("levels", [2, 4])
def test_all_landmarks_reproduce_exact_kernel(levels):
    rng = np.random.default_rng(levels)
    X = rng.integers(0, levels, (150, 40)).astype(np.uint8)
    gamma = 0.3 / levels
    fmap = NystroemMap(X, gamma)
    phi = fmap.transform(X)
    K = np.exp(-gamma * np_sqdist(X, X))
    assert fmap.n_components_ == 150
    np.testing.assert_allclose(phi @ phi.T, K, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fmap.kernel(X), K, rtol=0, atol=1e-12)
    # fewer landmarks: exact on the landmark block, an approximation elsewhere
    sub = NystroemMap(X[:50], gamma)
    p = sub.transform(X)
    np.testing.assert_allclose(p[:50] @ p[:50].T, K[:50, :50], rtol=0, atol=1e-8)
    assert np.abs(p @ p.T - K).max() > 1e-3


def test_duplicate_landmarks_drop_null_directions():
    X = np.repeat(np.eye(6, 20, dtype=np.uint8), 2, axis=0)  # every code twice
    fmap = NystroemMap(X, 0.5)
    assert fmap.n_components_ == 6
    np.testing.assert_allclose(fmap.transform(X) @ fmap.transform(X).T, np.exp(-0.5 * np_sqdist(X, X)), atol=1e-8)


def test_agrees_with_exact_svc():
    """Nyström with a quarter of the codes as landmarks vs libsvm on the same overlapping problem."""
    X, y = latent_codes(3500, 256, seed=3)
    X, y, Xq, yq = X[:2000], y[:2000], X[2000:], y[2000:]
    gamma, C = median_gamma(X), 1.0
    exact = SVC(kernel="rbf", gamma=gamma, C=C).fit(X.astype(np.float64), y)
    ref = exact.decision_function(Xq.astype(np.float64))
    det = CodeSVMDetector(gamma=gamma, C=C, solver="nystroem", n_components=500, random_state=0).fit(X, y)
    ours = det.decision_function(Xq)
    auc_ref, auc_ours = roc_auc_score(yq, ref), roc_auc_score(yq, ours)
    assert 0.7 < auc_ref < 0.95  # non-trivial: the classes overlap
    assert abs(auc_ours - auc_ref) <= 0.01
    assert np.mean((ours > 0) == (ref > 0)) >= 0.95
    # the exact solver of the detector is libsvm itself
    ex = CodeSVMDetector(gamma=gamma, C=C, solver="exact").fit(X, y)
    assert ex.solver_ == "exact" and ex.n_components_ is None
    np.testing.assert_allclose(ex.decision_function(Xq), ref, atol=1e-8)


def test_auto_solver_switches_above_the_exact_limit(monkeypatch):
    X, y = latent_codes(300, 64, seed=5)
    small = CodeSVMDetector(gamma=0.05, C=1.0).fit(X, y)
    assert small.solver_ == "exact"
    monkeypatch.setattr(svm, "_AUTO_EXACT_MAX", 200)
    big = CodeSVMDetector(gamma=0.05, C=1.0, n_components=100, random_state=0).fit(X, y)
    assert big.solver_ == "nystroem" and big.n_components_ == 100
    # more landmarks than codes: every code is a landmark
    det = CodeSVMDetector(gamma=0.05, C=1.0, solver="nystroem", n_components=5000).fit(X, y)
    assert det.n_components_ == 300
    np.testing.assert_array_equal(np.sort(det.support_vectors_, axis=0), np.sort(X, axis=0))


def test_nystroem_detector_round_trips(tmp_path):
    X, y = latent_codes(600, 96, seed=6)
    X, y, Xq = X[:400], y[:400], X[400:]
    det = CodeSVMDetector(gamma=median_gamma(X), C=2.0, solver="nystroem", n_components=64,
                          landmarks="kmeans++", random_state=0).fit(X, y)
    det.save(tmp_path / "det")
    back = CodeSVMDetector.load(tmp_path / "det")
    np.testing.assert_array_equal(back.decision_function(Xq), det.decision_function(Xq))
    assert (back.solver_, back.n_components_, back.get_params()["landmarks"]) == ("nystroem", 64, "kmeans++")
    exact = CodeSVMDetector(gamma=0.05, C=1.0).fit(X, y)
    exact.save(tmp_path / "exact")
    assert (CodeSVMDetector.load(tmp_path / "exact").solver_, CodeSVMDetector.load(tmp_path / "exact").n_components_) \
        == ("exact", None)


def test_landmark_methods():
    X, y = latent_codes(500, 64, seed=8)
    y = (np.arange(500) < 100).astype(int)  # 20 % class 1
    strat = select_landmarks(X, y, 50, "stratified", random_state=0)
    assert len(np.unique(strat)) == 50 and y[strat].sum() == 10
    uni = select_landmarks(X, y, 50, "uniform", random_state=0)
    assert len(np.unique(uni)) == 50 and np.all(np.diff(uni) > 0)
    # kmeans++ never picks a code identical to one already chosen (its feature distance is 0),
    # where random subsets of a set full of duplicates do
    D = np.repeat(X[:20], 10, axis=0)
    km = select_landmarks(D, None, 20, "kmeans++", gamma=0.05, random_state=0)
    assert len(np.unique(D[km], axis=0)) == 20
    rnd = select_landmarks(D, None, 20, "uniform", random_state=0)
    assert len(np.unique(D[rnd], axis=0)) < 20
    # quaternary codes go through the float path
    Q = np.repeat(np.random.default_rng(0).integers(0, 4, (15, 30)).astype(np.uint8), 4, axis=0)
    kq = select_landmarks(Q, None, 15, "kmeans++", gamma=0.05, random_state=1)
    assert len(np.unique(Q[kq], axis=0)) == 15


def test_parity_identity_by_enumeration():
    """E_S[chi_S(x) chi_S(y)] = exp(-gamma H(x, y)) when S holds each bit with probability (1 - e^-gamma)/2."""
    d, gamma = 4, 0.7
    p = (1 - math.exp(-gamma)) / 2
    for x, z in itertools.product(itertools.product([0, 1], repeat=d), repeat=2):
        s, t = 2 * np.array(x) - 1, 2 * np.array(z) - 1
        e = sum(p ** sum(S) * (1 - p) ** (d - sum(S)) * np.prod(np.where(S, s * t, 1))
                for S in itertools.product([0, 1], repeat=d))
        assert e == pytest.approx(math.exp(-gamma * np.sum(np.array(x) != np.array(z))), abs=1e-12)


def test_parity_features_are_parities_and_converge():
    rng = np.random.default_rng(9)
    X = (rng.random((60, 64)) < 0.5).astype(np.uint8)
    gamma = 2.0 / 32  # typical Hamming distance 32: kernel values ~exp(-2)
    K = np.exp(-gamma * np_sqdist(X, X))
    off = ~np.eye(len(X), dtype=bool)
    # each feature is the parity prod_{i in S} (2 x_i - 1), scaled
    pf = ParityFeatures(64, 50, gamma, random_state=0)
    s = 2 * X.astype(np.int64) - 1
    direct = np.stack([np.prod(np.where(pf.subsets_[:, j], s, 1), axis=1) for j in range(50)], 1) / math.sqrt(50)
    np.testing.assert_array_equal(pf.transform(X), direct)
    assert pf.probability == pytest.approx((1 - math.exp(-gamma)) / 2)
    # Monte Carlo error: each estimate is a mean of D independent +-1 products with variance
    # 1 - k^2, so the mean absolute error is sqrt(2 / pi) E[sqrt((1 - k^2) / D)] (a bias would add)
    expected_unit = np.sqrt(2 / np.pi) * np.sqrt(1 - K[off] ** 2).mean()
    errors = []
    for D in (64, 256, 1024, 4096):
        Z = ParityFeatures(64, D, gamma, random_state=D).transform(X)
        errors.append(np.abs(Z @ Z.T - K)[off].mean())
        np.testing.assert_allclose(np.diag(Z @ Z.T), 1.0)  # k(x, x) = 1 exactly
        assert errors[-1] == pytest.approx(expected_unit / math.sqrt(D), rel=0.25)
    errors = np.array(errors)
    ratios = errors[:-1] / errors[1:]  # halves for every 4x more features
    assert np.all((ratios > 1.6) & (ratios < 2.5)), ratios


def test_bad_inputs_raise_clear_errors():
    X, y = latent_codes(100, 16, seed=10)
    with pytest.raises(InvalidParameterError, match="solver"):
        CodeSVMDetector(gamma=0.1, C=1.0, solver="cascade").fit(X, y)
    with pytest.raises(InvalidParameterError, match="n_components"):
        CodeSVMDetector(gamma=0.1, C=1.0, solver="nystroem", n_components=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="landmarks"):
        CodeSVMDetector(gamma=0.1, C=1.0, solver="nystroem", landmarks="random").fit(X, y)
    with pytest.raises(InputError, match="landmarks must be one of"):
        select_landmarks(X, y, 10, "grid")
    with pytest.raises(InputError, match="n_components must be a positive integer"):
        select_landmarks(X, y, 0)
    with pytest.raises(InputError, match="gamma"):
        select_landmarks(X, y, 10, "kmeans++")
    with pytest.raises(InputError, match="gamma"):
        NystroemMap(X[:10], -1.0)
    with pytest.raises(InputError, match="integer array"):
        NystroemMap(X[:10], 0.1).transform(X.astype(np.float32) + 0.5)
    with pytest.raises(InputError, match=r"shape \(N, 16\)"):
        NystroemMap(X[:10], 0.1).transform(X[:, :8])
    with pytest.raises(InputError, match="coef has"):
        NystroemMap(X[:10], 0.1).fold(np.ones(3))
    with pytest.raises(InputError, match="two classes"):
        fit_nystroem_svm(X, np.zeros(len(X)), 0.1, 1.0)
    with pytest.raises(InputError, match="binary"):
        ParityFeatures(16, 8, 0.1).transform(X * 3)
    with pytest.raises(InputError, match="n_components"):
        ParityFeatures(16, 0, 0.1)
