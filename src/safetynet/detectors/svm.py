"""RBF-SVM adversary detector on discrete activation codes (SafetyNet, Lu et al., ICCV 2017, sec. 2.1).

``f(c) = sum_i alpha_i y_i exp(-||c - c_i||^2 / 2 sigma^2) + b`` (the paper's Eq. (1)) on codes
from :class:`safetynet.codes.ActivationQuantizer`. Training uses scikit-learn's ``SVC`` (libsvm);
scoring uses our exact integer kernel (:mod:`safetynet.detectors.kernel`), which is tens of
times faster than ``SVC.decision_function`` on 1,024-unit codes (see ``benchmarks/README.md``).

Label adversarial examples 1 and natural ones 0: ``decision_function`` is signed toward
``classes_[1]``, so higher means "more adversarial" and scores feed straight into ROC curves.

The paper wants a *small* sigma (large gamma) so the detector has essentially no gradient away
from the training codes. When ``gamma``/``sigma`` or ``C`` are not given, ``fit`` picks them by
stratified cross-validation (ROC AUC) on a log grid, with gamma scaled by the median squared
distance between training codes: ``gamma * median = 1`` is the widest kernel tried and
``gamma * median = 64`` (a typical pair of codes is ``exp(-64)`` apart) the narrowest.

Up to 8,000 codes the SVM is solved exactly (libsvm on the precomputed kernel); above that,
``solver="auto"`` uses Nyström features + a linear SVM (:mod:`safetynet.detectors.nystroem`), whose
model folds back into the same RBF expansion over ``n_components`` landmark codes, so scoring,
persistence and the attacks that differentiate the detector are unchanged.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.svm import SVC
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import CheckpointError, InputError
from .kernel import CodeRBFKernel, squared_distances
from .nystroem import LANDMARK_METHODS, fit_nystroem_svm
from .persistence import ENCODING, _json_safe, _need, bits_for, pack_codes, read_state, unpack_codes, write_state

#: Default grid: gamma in multiples of 1 / (median squared code distance), and C.
GAMMA_MULTIPLIERS = (1.0, 4.0, 16.0, 64.0)
C_GRID = (1.0, 10.0, 100.0)


def narrow_sigma_params(gamma_multiple: float, random_state: int | None, C: float | None = None) -> dict[str, Any]:
    """``CodeSVMDetector`` parameters for the paper's small sigma: gamma fixed at ``gamma_multiple`` /
    median squared code distance (64 = the grid's narrowest), C cross-validated unless given, and
    the exact solver, because Nystrom approximates a narrow kernel poorly (benchmarks/README.md)."""
    return {"random_state": random_state, "gamma_multipliers": (gamma_multiple,), "C": C, "solver": "exact"}


def check_codes(X: np.ndarray, levels: int | None, owner: str = "CodeSVMDetector") -> np.ndarray:
    """Check that ``X`` holds integer code levels in ``[0, levels)`` and return it as uint8."""
    X = np.asarray(X)
    if X.size:
        lo, hi = X.min(), X.max()
        if lo < 0:
            raise InputError(f"Negative values in data passed to {owner}: codes are levels 0..L-1; "
                             "quantize activations with safetynet.codes.ActivationQuantizer")
        if not (np.issubdtype(X.dtype, np.integer) or X.dtype == bool) and not np.array_equal(X, np.rint(X)):
            raise InputError(f"{owner} expects integer code levels, got non-integer values; "
                             "quantize activations with safetynet.codes.ActivationQuantizer")
        limit = 256 if levels is None else levels
        if hi >= limit:
            kind = {2: "binary (0/1)", 4: "quaternary (0..3)"}.get(levels, f"{limit}-level")
            raise InputError(f"X holds code level {int(hi)} but {owner} expects {kind} codes; "
                             f"quantize with ActivationQuantizer(levels={levels or 'L'}) or set levels=")
    return np.ascontiguousarray(X, dtype=np.uint8)


#: Largest training set fitted through a precomputed kernel (8,000^2 float64 = 512 MB).
_PRECOMPUTED_MAX = 8000
#: solver="auto" is exact up to this many training codes, Nyström above. Its own name so tests can
#: move the precomputed-kernel limit alone.
_AUTO_EXACT_MAX = _PRECOMPUTED_MAX
#: Nyström landmarks by default (measured in benchmarks/README.md, "SVM training at scale").
DEFAULT_N_COMPONENTS = 4096


class _DistanceSVC(ClassifierMixin, BaseEstimator):
    """SVC on a precomputed matrix of squared code distances; only used to select gamma and C.

    Cross-validation over gamma reuses one exact distance matrix instead of letting libsvm
    recompute 1,024-dimensional dot products for every fold and grid point.
    """

    def __init__(self, gamma: float = 1.0, C: float = 1.0) -> None:
        self.gamma = gamma
        self.C = C

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True  # GridSearchCV slices rows *and* columns
        return tags

    def fit(self, D: np.ndarray, y: np.ndarray) -> "_DistanceSVC":
        self.svc_ = SVC(kernel="precomputed", C=self.C).fit(np.exp(-self.gamma * D), y)
        self.classes_ = self.svc_.classes_
        return self

    def decision_function(self, D: np.ndarray) -> np.ndarray:
        return self.svc_.decision_function(np.exp(-self.gamma * D))

    def predict(self, D: np.ndarray) -> np.ndarray:
        return self.svc_.predict(np.exp(-self.gamma * D))


class CodeSVMDetector(ClassifierMixin, BaseEstimator):
    """Binary RBF-SVM on integer activation codes; label 1 = adversarial.

    Parameters
    ----------
    gamma : float or None, default=None
        RBF width ``1 / (2 sigma^2)``. None (and ``sigma`` None): chosen by cross-validation.
    C : float or None, default=None
        SVM regularisation. None: chosen by cross-validation.
    sigma : float or None, default=None
        The paper's sigma; alternative to ``gamma`` (give at most one).
    levels : int or None, default=None
        Code levels (2 = binary, 4 = quaternary). Codes outside ``[0, levels)`` raise an error;
        None infers ``max(X) + 1`` at fit time.
    param_grid : dict or None, default=None
        Grid for cross-validation, keys ``"gamma"`` and/or ``"C"`` (absolute values). None uses
        ``gamma_multipliers`` / median squared distance and :data:`C_GRID` for the
        parameters not given.
    gamma_multipliers : sequence of float or None, default=None
        Gamma candidates in multiples of 1 / (median squared training-code distance); None uses
        :data:`GAMMA_MULTIPLIERS`. ``(64.0,)`` fixes the paper's narrow kernel (a typical pair of
        codes ``exp(-64)`` apart) whatever the code width, and cross-validates only C.
    cv : int, default=3
        Stratified folds for the selection.
    max_train : int or None, default=None
        Fit on a stratified random subset of at most this many codes (SVM training is
        quadratic in the number of samples).
    max_cv_samples : int, default=3000
        The selection runs on a stratified subset of at most this many codes; the final SVM is
        then trained on all (up to ``max_train``) codes.
    random_state : int or None, default=None
        Seeds the subsets, the fold split and the Nyström landmarks.
    solver : {"auto", "exact", "nystroem"}, default="auto"
        ``"exact"``: libsvm (on the precomputed kernel up to 8,000 codes, memory ~8 N^2 bytes;
        libsvm's own RBF kernel beyond, time ~N^2). ``"nystroem"``: Nyström features + linear SVM,
        time and memory linear in N (see :mod:`safetynet.detectors.nystroem`). ``"auto"``: exact
        up to 8,000 training codes, Nyström above.
    n_components : int, default=4096
        Nyström landmarks (at most the number of training codes). Memory ~24 N n_components bytes.
    landmarks : {"stratified", "uniform", "kmeans++"}, default="stratified"
        How the Nyström landmarks are drawn from the training codes.

    Attributes
    ----------
    support_vectors_ : ndarray (n_SV, n_features_in_), uint8 code levels
        (stored bit-packed on disk, see :meth:`save`).
    dual_coef_ : ndarray (1, n_SV), float64, signed ``alpha_i y_i``
    intercept_ : ndarray (1,), float64
    gamma_, C_ : float, the parameters used
    levels_ : int
    classes_ : ndarray (2,)
    n_features_in_ : int
    cv_results_ : dict or None, GridSearchCV results when a selection ran
    solver_ : str, ``"exact"`` or ``"nystroem"``, the solver that ran
    n_components_ : int or None, Nyström landmarks used (None for the exact solver)
    """

    _parameter_constraints: dict = {
        "gamma": [Interval(Real, 0, None, closed="neither"), None],
        "C": [Interval(Real, 0, None, closed="neither"), None],
        "sigma": [Interval(Real, 0, None, closed="neither"), None],
        "levels": [Interval(Integral, 2, 256, closed="both"), None],
        "param_grid": [dict, None],
        "gamma_multipliers": ["array-like", None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "max_train": [Interval(Integral, 2, None, closed="left"), None],
        "max_cv_samples": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "solver": [StrOptions({"auto", "exact", "nystroem"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "landmarks": [StrOptions(set(LANDMARK_METHODS))],
    }

    def __init__(self, gamma: float | None = None, C: float | None = None, sigma: float | None = None,
                 levels: int | None = None, param_grid: dict | None = None, cv: int = 3,
                 max_train: int | None = None, max_cv_samples: int = 3000, random_state: int | None = None,
                 solver: str = "auto", n_components: int = DEFAULT_N_COMPONENTS, landmarks: str = "stratified",
                 gamma_multipliers: tuple[float, ...] | None = None) -> None:
        self.gamma = gamma
        self.C = C
        self.sigma = sigma
        self.levels = levels
        self.param_grid = param_grid
        self.cv = cv
        self.max_train = max_train
        self.max_cv_samples = max_cv_samples
        self.random_state = random_state
        self.solver = solver
        self.n_components = n_components
        self.landmarks = landmarks
        self.gamma_multipliers = gamma_multipliers

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Codes are non-negative integer levels: the estimator checks then feed rounded, shifted
        # data (and expect "Negative values in data" for negative X), and only two classes.
        tags.input_tags.positive_only = True
        tags.input_tags.categorical = True
        tags.classifier_tags.multi_class = False
        return tags

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> "CodeSVMDetector":
        """Fit on codes ``X`` (n, d) and labels ``y`` (1 = adversarial). Returns ``self``."""
        self._validate_params()
        if self.gamma is not None and self.sigma is not None:
            raise InputError("give gamma or sigma, not both (gamma = 1 / (2 sigma^2))")
        X, y = validate_data(self, X, y, dtype="numeric", ensure_all_finite=True)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type != "binary":
            raise InputError(f"Only binary classification is supported (1 = adversarial, 0 = natural). "
                             f"The type of the target is {y_type}.")
        classes = np.unique(y)
        if len(classes) != 2:
            raise InputError(f"need codes of both classes to train a detector, got one class {classes.tolist()}; "
                             "add natural (0) and adversarial (1) examples")
        X = check_codes(X, self.levels)
        levels = int(self.levels) if self.levels is not None else max(2, int(X.max()) + 1)

        if self.max_train is not None and X.shape[0] > self.max_train:
            X, y = self._subset(X, y, self.max_train, self.random_state)
        gamma = self.gamma if self.gamma is not None else (
            None if self.sigma is None else 1.0 / (2.0 * float(self.sigma) ** 2))
        C = self.C
        self.cv_results_ = None
        if gamma is None or C is None or self.param_grid:
            gamma, C = self._select(X, y, gamma, C)

        solver = self.solver if self.solver != "auto" else ("exact" if X.shape[0] <= _AUTO_EXACT_MAX else "nystroem")
        if solver == "nystroem":
            self._fit_nystroem(X, y, float(gamma), float(C), levels)
            return self
        if X.shape[0] <= _PRECOMPUTED_MAX:
            # Same problem as SVC(kernel="rbf"), but the kernel comes from exact integer code
            # distances (one int matrix product) instead of libsvm's float64 loop over all d
            # units per pair: ~30x faster to fit on 4,096-unit codes.
            K = np.exp(-float(gamma) * squared_distances(X, X).astype(np.float64))
            svc = SVC(kernel="precomputed", C=C).fit(K, y)
            del K
        else:  # the n x n kernel would not fit comfortably in memory
            svc = SVC(kernel="rbf", gamma=gamma, C=C).fit(X.astype(np.float64), y)
        self.classes_ = svc.classes_
        self.support_vectors_ = X[svc.support_].copy()
        # For two classes sklearn already signs dual_coef_/intercept_ toward classes_[1].
        self.dual_coef_ = np.asarray(svc.dual_coef_, dtype=np.float64).reshape(1, -1).copy()
        self.intercept_ = np.asarray(svc.intercept_, dtype=np.float64).reshape(1).copy()
        self.n_support_ = np.asarray(svc.n_support_, dtype=np.int32).copy()
        self.gamma_, self.C_, self.levels_ = float(gamma), float(C), levels
        self.solver_, self.n_components_ = "exact", None
        self._build_kernel()
        return self

    def _fit_nystroem(self, X: np.ndarray, y: np.ndarray, gamma: float, C: float, levels: int) -> None:
        # random_state as given (int or None): the landmarks are a function of the seed alone
        res = fit_nystroem_svm(X, y, gamma, C, n_components=self.n_components, landmarks=self.landmarks,
                               random_state=self.random_state)
        self.classes_ = res.classes
        self.support_vectors_ = res.support_vectors
        self.dual_coef_ = res.dual_coef
        self.intercept_ = res.intercept
        self.n_support_ = res.n_support
        self.gamma_, self.C_, self.levels_ = gamma, C, levels
        self.solver_, self.n_components_ = "nystroem", int(res.support_vectors.shape[0])
        self._build_kernel()

    @staticmethod
    def _subset(X: np.ndarray, y: np.ndarray, n: int, random_state: Any) -> tuple[np.ndarray, np.ndarray]:
        try:
            idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=random_state)
        except ValueError:  # a class too small to stratify: plain random subset
            idx, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=random_state)
        idx = np.sort(idx)
        return X[idx], y[idx]

    def _select(self, X: np.ndarray, y: np.ndarray, gamma: float | None, C: float | None) -> tuple[float, float]:
        """Cross-validated (ROC AUC) choice of the parameters not fixed by the user."""
        if X.shape[0] > self.max_cv_samples:
            X, y = self._subset(X, y, self.max_cv_samples, self.random_state)
        D = squared_distances(X, X).astype(np.float64)  # (n, n), exact integers
        grid = dict(self.param_grid or {})
        unknown = set(grid) - {"gamma", "C"}
        if unknown:
            raise InputError(f"param_grid keys must be 'gamma' and/or 'C', got {sorted(unknown)}")
        for key, fixed in (("gamma", gamma), ("C", C)):
            if key in grid and fixed is not None:
                raise InputError(f"{key} is fixed but param_grid also lists {key}; give one of them")
            if key in grid:
                vals = np.asarray(grid[key], dtype=np.float64).ravel()
                if vals.size == 0 or not np.all(np.isfinite(vals) & (vals > 0)):
                    raise InputError(f"param_grid['{key}'] must be a non-empty list of positive numbers")
                grid[key] = vals.tolist()
            elif fixed is not None:
                grid[key] = [float(fixed)]
        if "gamma" not in grid:
            off = D[~np.eye(len(D), dtype=bool)]
            scale = float(np.median(off)) if off.size else 0.0
            if scale <= 0:
                scale = float(off.mean()) if off.size and off.mean() > 0 else 1.0
            multipliers = GAMMA_MULTIPLIERS if self.gamma_multipliers is None else self.gamma_multipliers
            mult = np.asarray(multipliers, dtype=np.float64).ravel()
            if mult.size == 0 or not np.all(np.isfinite(mult) & (mult > 0)):
                raise InputError(f"gamma_multipliers must be positive numbers, e.g. (64.0,), got {multipliers!r}")
            grid["gamma"] = [float(m) / scale for m in mult]
        if "C" not in grid:
            grid["C"] = list(C_GRID)
        if len(grid["gamma"]) * len(grid["C"]) == 1:
            return float(grid["gamma"][0]), float(grid["C"][0])
        folds = min(self.cv, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if folds < 2:
            raise InputError("too few codes of one class to cross-validate gamma and C; "
                             "give gamma= and C= explicitly or add more examples")
        search = GridSearchCV(_DistanceSVC(), grid, scoring="roc_auc", refit=False, error_score="raise",
                              cv=StratifiedKFold(folds, shuffle=True, random_state=self.random_state))
        search.fit(D, y)
        self.cv_results_ = search.cv_results_
        best = search.best_params_
        return float(best["gamma"]), float(best["C"])

    # -- scoring --------------------------------------------------------------------------------
    def _build_kernel(self) -> None:
        # Prepared once per fit/load, so scoring never mutates the estimator.
        self._kernel = CodeRBFKernel(self.support_vectors_, self.dual_coef_, float(self.intercept_[0]), self.gamma_)

    def _get_kernel(self) -> CodeRBFKernel:
        kernel = getattr(self, "_kernel", None)
        if kernel is None:  # e.g. fitted attributes set by hand
            kernel = CodeRBFKernel(self.support_vectors_, self.dual_coef_, float(self.intercept_[0]), self.gamma_)
        return kernel

    def decision_function(self, X: Any) -> np.ndarray:
        """Signed distance-like score (n,), higher = more like ``classes_[1]`` (adversarial)."""
        check_is_fitted(self, "support_vectors_")
        X = validate_data(self, X, reset=False, dtype="numeric", ensure_all_finite=True)
        return self._get_kernel().decision_function(check_codes(X, self.levels_))

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[1]`` (adversarial) where ``decision_function > 0``, else ``classes_[0]``."""
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(np.intp)]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``detector.safetensors`` + ``detector.json`` atomically (no pickle)."""
        save_detector(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "CodeSVMDetector":
        """Read a detector written by :meth:`save`; raises CheckpointError on anything unexpected."""
        return load_detector(directory)

    @property
    def sigma_(self) -> float:
        """The paper's sigma, ``sqrt(1 / (2 gamma_))``."""
        check_is_fitted(self, "gamma_")
        return math.sqrt(1.0 / (2.0 * self.gamma_))


DETECTOR_FORMAT = "safetynet-code-svm"
DETECTOR_VERSION = 1


# -- one detector <-> arrays + metadata (the files: safetynet.detectors.persistence) ---------------
def detector_state(detector: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and JSON metadata describing a fitted :class:`CodeSVMDetector`."""
    check_is_fitted(detector, "support_vectors_")
    classes = np.asarray(detector.classes_)
    if not (np.issubdtype(classes.dtype, np.integer) or np.issubdtype(classes.dtype, np.floating)
            or classes.dtype == bool):
        raise InputError(f"only numeric class labels can be saved, got {classes.dtype}; "
                         "use 0 = natural, 1 = adversarial")
    arrays = {
        prefix + "support_vectors": pack_codes(detector.support_vectors_, detector.levels_),
        prefix + "dual_coef": np.ascontiguousarray(detector.dual_coef_, dtype=np.float64),
        prefix + "intercept": np.ascontiguousarray(detector.intercept_, dtype=np.float64),
        prefix + "classes": classes.astype(np.float64),
        prefix + "n_support": np.asarray(detector.n_support_, dtype=np.int32).reshape(2),
    }
    meta = {
        "kind": type(detector).__name__,
        "gamma": detector.gamma_, "C": detector.C_, "levels": int(detector.levels_),
        "n_features": int(detector.n_features_in_), "n_support": int(detector.support_vectors_.shape[0]),
        "encoding": ENCODING, "classes_dtype": str(classes.dtype),
        "solver": getattr(detector, "solver_", "exact"), "n_components": getattr(detector, "n_components_", None),
        "params": _json_safe(detector.get_params()),
    }
    return arrays, meta


def detector_from_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], prefix: str = "",
                        where: str = "detector") -> Any:
    """Rebuild a fitted :class:`CodeSVMDetector`, validating every shape, dtype and value."""
    try:
        kind, levels, d, n_sv = meta["kind"], int(meta["levels"]), int(meta["n_features"]), int(meta["n_support"])
        gamma, C, encoding = float(meta["gamma"]), float(meta["C"]), meta["encoding"]
        params = dict(meta.get("params") or {})
        classes_dtype = np.dtype(meta.get("classes_dtype", "float64"))
        # detectors saved before the Nyström solver existed were all fitted exactly
        solver, n_components = meta.get("solver", "exact"), meta.get("n_components")
        n_components = None if n_components is None else int(n_components)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: metadata is missing or has a bad field ({e}); re-save the detector") from None
    if kind != "CodeSVMDetector":
        raise CheckpointError(f"{where} holds a {kind!r}, not a CodeSVMDetector")
    if encoding != ENCODING:
        raise CheckpointError(f"{where} uses code encoding {encoding!r}; this version reads {ENCODING!r}")
    if solver not in ("exact", "nystroem"):
        raise CheckpointError(f"{where}: unknown solver {solver!r} in the metadata; re-save the detector")
    if not (2 <= levels <= 256 and d > 0 and n_sv > 0 and gamma > 0 and math.isfinite(gamma) and C > 0):
        raise CheckpointError(f"{where}: invalid metadata values (levels={levels}, n_features={d}, "
                              f"n_support={n_sv}, gamma={gamma}, C={C})")
    planes = _need(arrays, prefix + "support_vectors", np.uint8, (bits_for(levels), n_sv, (d + 7) // 8), where)
    dual = _need(arrays, prefix + "dual_coef", np.float64, (1, n_sv), where)
    intercept = _need(arrays, prefix + "intercept", np.float64, (1,), where)
    classes = _need(arrays, prefix + "classes", np.float64, (2,), where)
    n_support = _need(arrays, prefix + "n_support", np.int32, (2,), where)
    if n_support.min() < 0 or int(n_support.sum()) != n_sv:
        raise CheckpointError(f"{where}: n_support {n_support.tolist()} does not add up to {n_sv} support vectors")
    if not (np.isfinite(dual).all() and np.isfinite(intercept).all() and np.isfinite(classes).all()):
        raise CheckpointError(f"{where}: dual coefficients, intercept or classes are not finite")
    sv = unpack_codes(planes, d)
    if sv.max() >= levels:
        raise CheckpointError(f"{where}: support vectors hold levels >= {levels}; the file is corrupt")
    valid = set(CodeSVMDetector().get_params())
    det = CodeSVMDetector(**{k: v for k, v in params.items() if k in valid})
    det.support_vectors_ = sv
    det.dual_coef_ = dual.copy()
    det.intercept_ = intercept.copy()
    det.classes_ = classes.astype(classes_dtype)
    det.gamma_, det.C_, det.levels_ = gamma, C, levels
    det.n_features_in_ = d
    det.n_support_ = n_support.copy()
    det.cv_results_ = None
    det.solver_, det.n_components_ = solver, n_components
    det._build_kernel()
    return det


def save_detector(detector: Any, directory: str | os.PathLike[str]) -> Path:
    arrays, meta = detector_state(detector)
    return write_state(directory, arrays, meta, DETECTOR_FORMAT, DETECTOR_VERSION)


def load_detector(directory: str | os.PathLike[str]) -> Any:
    arrays, meta = read_state(directory, DETECTOR_FORMAT, DETECTOR_VERSION)
    expected = {"support_vectors", "dual_coef", "intercept", "classes", "n_support"}
    if set(arrays) != expected:
        extra = sorted(set(arrays) ^ expected)
        raise CheckpointError(f"{directory}: unexpected arrays {extra} in detector.safetensors")
    return detector_from_state(arrays, meta, where=str(Path(directory) / "detector.safetensors"))


__all__ = ["C_GRID", "DEFAULT_N_COMPONENTS", "DETECTOR_FORMAT", "DETECTOR_VERSION", "CodeSVMDetector", "GAMMA_MULTIPLIERS", "check_codes",
           "detector_from_state", "detector_state", "load_detector", "save_detector"]
