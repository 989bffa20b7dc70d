"""Scalable training of the code RBF-SVM: Nyström features + a linear SVM, folded back into an RBF expansion.

The Nyström method (Williams & Seeger, "Using the Nyström method to speed up kernel machines",
NIPS 2001) approximates the kernel through ``m`` landmark codes ``L``:
``k(x, y) ~ K(x, L) K_LL^{-1} K(L, y) = phi(x) . phi(y)`` with the explicit feature map
``phi(x) = K(x, L) U Lambda^{-1/2}`` (``K_LL = U Lambda U^T``; eigenvalues below ``rcond *
max(Lambda)`` are dropped, e.g. for duplicate landmarks). A linear SVM on ``phi`` (scikit-learn's
``LinearSVC``, hinge loss, the same ``C``) then fits in time and memory linear in the number of
codes ``N`` (no ``N x N`` kernel matrix), and its model folds back *exactly* into the form the
detector deploys, Eq. (1) of the paper:

    f(x) = w . phi(x) + b = sum_j K(x, l_j) a_j + b,   a = U Lambda^{-1/2} w,

so ``support_vectors_ = L``, ``dual_coef_ = a``, ``intercept_ = b``. The deployed detector and the
type-II / adaptive attacks (which differentiate that expansion) therefore score exactly the model
that was trained, to float rounding.

Intercept: liblinear regularises the bias (the weight of a constant feature of value
``intercept_scaling``), libsvm does not. We keep liblinear's ``intercept_scaling = 1``, chosen by
measurement: with ``m = N`` landmarks (where Nyström is exact, so only the bias treatment differs
from libsvm) on 2,000 overlapping synthetic codes, 1 gave the same decisions as libsvm's ``SVC`` on
100 % of held-out codes in 22-152 solver epochs; 10 also agreed but needed 1,000-5,000 epochs, and
100 did not converge in 5,000 (72-100 % agreement). Every ``phi(x)`` has norm at most
``sqrt(k(x, x)) = 1``, so a constant feature of 1 is on the scale of the others.

:class:`ParityFeatures` is the alternative measured there for binary codes: random features exact
in expectation for ``exp(-gamma * Hamming)``. Per bit, with ``s = 2a - 1``, a random subset ``S``
that contains each bit independently with probability ``p = (1 - exp(-gamma)) / 2`` gives
``E[s_i(x) s_i(y)]`` = 1 for equal bits and ``1 - 2p = exp(-gamma)`` for different ones, so the
parity ``chi_S(x) = prod_{i in S} s_i(x)`` satisfies ``E_S[chi_S(x) chi_S(y)] = exp(-gamma H(x, y))``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC
from sklearn.utils import check_random_state

from ..errors import InputError
from .kernel import CodeRBFKernel

log = logging.getLogger(__name__)

LANDMARK_METHODS = ("stratified", "uniform", "kmeans++")
#: Intercept feature value for the linear SVM (see the module docstring).
INTERCEPT_SCALING = 1.0
#: Eigenvalues of K_LL below this fraction of the largest are dropped.
RCOND = 1e-10
_BLOCK_BYTES = 1 << 26  # (rows x landmarks) float64 kernel block of ~64 MB
_KMEANS_POOL = 32768  # kmeans++ seeds from at most this many candidate codes


def _codes(X: Any, d: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != d:
        raise InputError(f"codes must have shape (N, {d}), got {X.shape}")
    if not (np.issubdtype(X.dtype, np.integer) or X.dtype == bool):
        raise InputError(f"codes must be an integer array, got {X.dtype}; "
                         "quantize activations with safetynet.codes.ActivationQuantizer")
    return X


# ----------------------------------------------------------------------------------- landmarks
def select_landmarks(X: np.ndarray, y: np.ndarray | None, n_components: int, method: str = "stratified",
                     gamma: float | None = None, random_state: Any = None) -> np.ndarray:
    """Sorted row indices of ``X`` to use as Nyström landmarks.

    ``"stratified"``: a class-stratified random subset (each class in proportion, so neither
    natural nor adversarial codes are under-represented); ``"uniform"``: a plain random subset;
    ``"kmeans++"``: kernel k-means++ seeding (each next landmark drawn with probability
    proportional to its feature-space squared distance ``2 - 2 max_j k(x, l_j)`` to the landmarks
    so far; Oglic & Gärtner, ICML 2017) from a random pool of at most 32,768 codes; needs ``gamma``.
    """
    if method not in LANDMARK_METHODS:
        raise InputError(f"landmarks must be one of {list(LANDMARK_METHODS)}, got {method!r}")
    n = X.shape[0]
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise InputError(f"n_components must be a positive integer, got {n_components!r}")
    m = min(int(n_components), n)
    rng = check_random_state(random_state)
    if m == n:
        return np.arange(n)
    if method == "stratified" and y is not None:
        try:
            idx, _ = train_test_split(np.arange(n), train_size=m, stratify=y, random_state=rng)
            return np.sort(idx)
        except ValueError:  # a class too small to stratify: fall back to a plain random subset
            pass
    if method in ("stratified", "uniform"):
        return np.sort(rng.choice(n, size=m, replace=False))
    if gamma is None or not gamma > 0:
        raise InputError("kmeans++ landmarks need the kernel's gamma > 0")
    return _kmeanspp(X, m, float(gamma), rng)


def _kmeanspp(X: np.ndarray, m: int, gamma: float, rng: np.random.RandomState) -> np.ndarray:
    pool = np.arange(X.shape[0]) if X.shape[0] <= max(_KMEANS_POOL, m) else \
        np.sort(rng.choice(X.shape[0], size=max(_KMEANS_POOL, m), replace=False))
    P = X[pool]
    binary = int(P.max()) <= 1
    if binary:  # Hamming distances by XOR + popcount on packed words: ~100x faster than a GEMV here
        pad = (-P.shape[1]) % 64
        packed = np.packbits(np.pad(P, ((0, 0), (0, pad))), axis=1).view(np.uint64)
    else:
        Pf = P.astype(np.float32)  # exact: squared distances of codes stay far below 2^24
        norms = (Pf * Pf).sum(1)

    def sqdist(j: int) -> np.ndarray:
        if binary:
            return np.bitwise_count(packed ^ packed[j]).sum(1, dtype=np.int64).astype(np.float64)
        return (norms + norms[j] - 2.0 * (Pf @ Pf[j])).astype(np.float64)

    chosen = [int(rng.randint(len(P)))]
    # feature-space squared distance to the nearest landmark: ||phi(x) - phi(l)||^2 = 2 - 2 k(x, l)
    d2 = 2.0 - 2.0 * np.exp(-gamma * sqdist(chosen[0]))
    for _ in range(1, m):
        total = d2.sum()
        if total <= 0:  # every code coincides with a landmark: fill up at random
            rest = np.setdiff1d(np.arange(len(P)), chosen)
            chosen.extend(rng.choice(rest, size=m - len(chosen), replace=False).tolist())
            break
        j = int(rng.choice(len(P), p=d2 / total))
        chosen.append(j)
        np.minimum(d2, 2.0 - 2.0 * np.exp(-gamma * sqdist(j)), out=d2)
        d2[j] = 0.0
    return np.sort(pool[np.asarray(chosen)])


# ----------------------------------------------------------------------------------- feature map
class NystroemMap:
    """Nyström feature map ``phi(x) = K(x, L) U Lambda^{-1/2}`` of the exact code RBF kernel.

    Parameters
    ----------
    landmarks : ndarray (m, D), integer codes
    gamma : float
    rcond : float, eigenvalues of ``K_LL`` below ``rcond * max`` are dropped.

    Attributes
    ----------
    components_ : ndarray (m, k), float64, ``U_k Lambda_k^{-1/2}``
    eigenvalues_ : ndarray (k,), the kept eigenvalues of ``K_LL``
    n_components_ : int, ``k`` (the feature dimension)
    """

    def __init__(self, landmarks: np.ndarray, gamma: float, rcond: float = RCOND) -> None:
        landmarks = np.asarray(landmarks)
        if landmarks.ndim != 2 or landmarks.shape[0] == 0:
            raise InputError(f"landmarks must be a non-empty (m, D) array of codes, got shape {landmarks.shape}")
        if not (isinstance(gamma, (int, float, np.floating)) and gamma > 0 and math.isfinite(gamma)):
            raise InputError(f"gamma must be a positive finite number, got {gamma!r}")
        if not 0 <= rcond < 1:
            raise InputError(f"rcond must lie in [0, 1), got {rcond!r}")
        self.gamma = float(gamma)
        # CodeRBFKernel checks the codes and computes exact integer distances to the landmarks.
        self._kernel = CodeRBFKernel(landmarks, np.zeros(landmarks.shape[0]), 0.0, self.gamma)
        self.landmarks = np.ascontiguousarray(landmarks, dtype=np.uint8)
        K = self.kernel(self.landmarks)
        lam, U = np.linalg.eigh(K)
        del K
        keep = lam > rcond * lam[-1]
        self.eigenvalues_ = lam[keep]
        self.components_ = np.ascontiguousarray(U[:, keep] / np.sqrt(lam[keep]))
        self.n_components_ = int(keep.sum())
        if self.n_components_ < landmarks.shape[0]:
            log.info("Nyström: kept %d of %d eigenvalues of K_LL (the rest below %.0e of the largest)",
                     self.n_components_, landmarks.shape[0], rcond)

    def _rows(self) -> int:
        return max(64, _BLOCK_BYTES // (8 * self.landmarks.shape[0]))

    def kernel(self, X: np.ndarray) -> np.ndarray:
        """Exact ``exp(-gamma ||x - l_j||^2)``, (N, m) float64."""
        X = _codes(X, self.landmarks.shape[1])
        out = np.empty((X.shape[0], self.landmarks.shape[0]), dtype=np.float64)
        step = self._rows()
        for i in range(0, X.shape[0], step):
            out[i:i + step] = self._kernel_block(X[i:i + step])
        return out

    def _kernel_block(self, Xb: np.ndarray) -> np.ndarray:
        d = self._kernel.squared_distances(Xb)
        return np.exp(d * -self.gamma)

    def transform(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``phi(X)``, (N, k) float64, computed in blocks of rows (memory: the output + ~100 MB)."""
        X = _codes(X, self.landmarks.shape[1])
        shape = (X.shape[0], self.n_components_)
        if out is None:
            out = np.empty(shape, dtype=np.float64)
        elif out.shape != shape or out.dtype != np.float64:
            raise InputError(f"out must be a float64 array of shape {shape}, got {out.dtype} {out.shape}")
        step = self._rows()
        for i in range(0, X.shape[0], step):
            np.matmul(self._kernel_block(X[i:i + step]), self.components_, out=out[i:i + step])
        return out

    def fold(self, coef: np.ndarray) -> np.ndarray:
        """Weights over the landmarks, ``U Lambda^{-1/2} w``, of a linear model ``w`` on ``phi``."""
        coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        if coef.shape[0] != self.n_components_:
            raise InputError(f"coef has {coef.shape[0]} entries for {self.n_components_} Nyström features")
        return self.components_ @ coef


# ----------------------------------------------------------------------------------- the solver
@dataclass
class NystroemSVMResult:
    """A linear SVM on Nyström features and its exact RBF expansion over the landmarks."""

    support_vectors: np.ndarray  # (m, D) uint8, the landmarks
    dual_coef: np.ndarray  # (1, m) float64
    intercept: np.ndarray  # (1,) float64
    classes: np.ndarray  # (2,)
    n_support: np.ndarray  # (2,) int32, landmarks per class
    feature_map: NystroemMap
    linear: LinearSVC


def fit_nystroem_svm(X: np.ndarray, y: np.ndarray, gamma: float, C: float, n_components: int = 4096,
                     landmarks: str = "stratified", intercept_scaling: float = INTERCEPT_SCALING,
                     tol: float = 1e-4, max_iter: int = 1000, random_state: Any = None) -> NystroemSVMResult:
    """Fit the code RBF-SVM on ``X`` (N, D) codes, ``y`` two classes, through Nyström + ``LinearSVC``.

    Memory: ``phi`` (N x k float64) plus liblinear's copy of it (16 bytes per entry), so ~24 N k
    bytes (9.4 GB at N = 96,000, k = 4,096); never an N x N matrix. Returns the folded model.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise InputError(f"X must be (N, D) codes with one label per row, got X {X.shape} and y {y.shape}")
    classes = np.unique(y)
    if len(classes) != 2:
        raise InputError(f"the Nyström SVM needs exactly two classes, got {classes.tolist()}")
    if not (C > 0 and math.isfinite(C)):
        raise InputError(f"C must be a positive finite number, got {C!r}")
    rng = check_random_state(random_state)
    t0 = time.perf_counter()
    idx = select_landmarks(X, y, n_components, landmarks, gamma=gamma, random_state=rng)
    t1 = time.perf_counter()
    fmap = NystroemMap(X[idx], gamma)
    t2 = time.perf_counter()
    phi = fmap.transform(X)
    t3 = time.perf_counter()
    seed = int(rng.randint(np.iinfo(np.int32).max))
    # hinge loss = libsvm's objective; the dual solver suits N >> k (Hsieh et al., ICML 2008)
    lin = LinearSVC(loss="hinge", dual=True, C=float(C), intercept_scaling=float(intercept_scaling), tol=tol,
                    max_iter=max_iter, random_state=seed)
    lin.fit(phi, y)
    del phi
    log.info("Nyström SVM on %d codes, %d landmarks (%d features): landmarks %.1f s, K_LL eigendecomposition "
             "%.1f s, features %.1f s, LinearSVC %.1f s (%d epochs)", X.shape[0], len(idx), fmap.n_components_,
             t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3, int(lin.n_iter_))
    # LinearSVC signs coef_/intercept_ toward classes_[1], as libsvm does for two classes.
    dual = fmap.fold(lin.coef_[0]).reshape(1, -1)
    n_support = np.array([(y[idx] == classes[0]).sum(), (y[idx] == classes[1]).sum()], dtype=np.int32)
    return NystroemSVMResult(fmap.landmarks.copy(), dual, np.asarray(lin.intercept_, dtype=np.float64).reshape(1),
                             lin.classes_, n_support, fmap, lin)


# ----------------------------------------------------------------------------------- parity features
class ParityFeatures:
    """Random parity features, exact in expectation for ``exp(-gamma * Hamming)`` on binary codes.

    ``z_j(x) = chi_{S_j}(x) / sqrt(n_components)`` with independent random subsets ``S_j`` that
    contain each bit with probability ``(1 - exp(-gamma)) / 2`` (derivation in the module
    docstring), so ``E[z(x) . z(y)] = exp(-gamma H(x, y))`` and each entry of the estimate has
    variance ``(1 - k^2) / n_components``.
    """

    def __init__(self, n_features_in: int, n_components: int, gamma: float, random_state: Any = None) -> None:
        if not (isinstance(n_components, (int, np.integer)) and n_components > 0):
            raise InputError(f"n_components must be a positive integer, got {n_components!r}")
        if not (gamma > 0 and math.isfinite(gamma)):
            raise InputError(f"gamma must be a positive finite number, got {gamma!r}")
        rng = check_random_state(random_state)
        self.gamma = float(gamma)
        self.probability = (1.0 - math.exp(-self.gamma)) / 2.0
        self.subsets_ = rng.random_sample((int(n_features_in), int(n_components))) < self.probability  # (D, F)
        self.sizes_ = self.subsets_.sum(0)  # |S_j|
        self._S = CodeRBFKernel(self.subsets_.T.astype(np.uint8), np.zeros(int(n_components)), 0.0, 1.0)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, n_components) float64 features in ``{-1, +1} / sqrt(n_components)``."""
        X = _codes(X, self.subsets_.shape[0])
        if X.size and int(X.max()) > 1:
            raise InputError("parity features are defined for binary (0/1) codes only; "
                             "quantize with ActivationQuantizer(levels=2)")
        # |S| - |x & S| = number of bits in S where x is 0, i.e. where s = -1; via exact distances:
        # ||x - S||^2 = |x| + |S| - 2 |x & S|.
        dist = self._S.squared_distances(X)
        ones = X.sum(1, dtype=np.int64)[:, None]
        overlap = (ones + self.sizes_[None, :] - dist) // 2
        negatives = self.sizes_[None, :] - overlap
        return (1.0 - 2.0 * (negatives & 1)) / math.sqrt(self.subsets_.shape[1])


__all__ = ["INTERCEPT_SCALING", "LANDMARK_METHODS", "NystroemMap", "NystroemSVMResult", "ParityFeatures",
           "RCOND", "fit_nystroem_svm", "select_landmarks"]
