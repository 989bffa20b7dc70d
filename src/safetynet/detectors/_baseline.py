"""Shared machinery of the feature-based baseline detectors (Mahalanobis, LID, KD+BU).

All three published detectors have the same shape: a few per-image *characteristics* computed
from the classifier's hidden layers (a Mahalanobis distance per layer, an LID estimate per layer,
a kernel density and a dropout uncertainty), then a logistic regression that separates natural
(label 0) from adversarial (label 1) examples on those characteristics. This module holds:

* :class:`FeatureLogisticDetector`, the scikit-learn-style base class: ``fit(natural_images,
  adversarial_images)`` splits the natural images (seeded) into a *reference* part that fits the
  unsupervised statistics (class Gaussians, kernel densities, the LID reference minibatch) and
  a part that, with the adversarial images, trains the logistic regression; characteristics of
  natural images that also fitted the statistics would be in-sample (a kernel density containing
  the point itself), which is why the two parts are disjoint;
* ``decision_function(images)`` = the regression's logit (higher = more adversarial), with
  ``detect`` = ``> 0``; :meth:`~FeatureLogisticDetector.logits_and_score_torch` is the same
  score as a differentiable torch function of the images (what the adaptive attacks descend);
* persistence without pickle: ``detector.safetensors`` (arrays) + ``detector.json`` (settings,
  regression weights as numbers, and a sha256 of the classifier so it is not reused with another).

The logistic regression is scikit-learn's on standardised characteristics with a cross-validated
C (Ma et al.'s and Lee et al.'s code use ``LogisticRegressionCV``); only its fitted numbers are kept, so
scoring is one affine map, also in torch.
"""

from __future__ import annotations

import json
import math
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from torch import nn

from .._io import atomic_path, write_json_atomic
from .._validation import check_images, check_labels
from ..errors import CheckpointError, InputError

__all__ = ["FeatureLogisticDetector", "check_int", "check_number", "head_module", "tapped_layers"]

WEIGHTS = "detector.safetensors"
CONFIG = "detector.json"


def check_int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_number(value: Any, name: str, *, low: float = 0.0, low_open: bool = False, high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and < {high:g}")
        raise InputError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def tapped_layers(model: nn.Module, layers: tuple[str, ...] | list[str] | None) -> list[str]:
    """``layers`` (default: the model's ``late_relus``), checked to be modules of the model."""
    from ..taps import resolve_layers

    layers = layers if layers is not None else getattr(model, "late_relus", None)
    if not layers:
        raise InputError("the model has no late_relus; give layers= the module names to tap")
    return list(resolve_layers(model, list(layers)))


def head_module(model: nn.Module, head: str | None) -> tuple[str, nn.Linear]:
    """The classifier's final linear layer: ``head`` by name, or the last ``nn.Linear`` of the model."""
    modules = dict(model.named_modules())
    if head is None:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise InputError("the model has no nn.Linear layer; give head= the name of its final linear layer")
        head = linears[-1]
    if head not in modules or not isinstance(modules[head], nn.Linear):
        raise InputError(f"head={head!r} is not an nn.Linear module of the model; give the final linear layer's name")
    return head, modules[head]


def classifier_sha256(model: nn.Module) -> str:
    from .metzen import classifier_fingerprint

    return classifier_fingerprint(model)


def _cross_validated_C(feats: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    """The inverse regularisation C (of 10 on a log grid, as ``LogisticRegressionCV``'s default) with the best
    stratified ``folds``-fold log-loss; done by hand because ``LogisticRegressionCV``'s defaults are changing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    best, best_c = -np.inf, 1.0
    for c in np.logspace(-4, 4, 10):
        lr = LogisticRegression(C=float(c), max_iter=1000, class_weight="balanced")
        score = cross_val_score(lr, feats, y, cv=cv, scoring="neg_log_loss").mean()
        if score > best + 1e-12:  # ties keep the stronger regularisation
            best, best_c = score, float(c)
    return best_c


class FeatureLogisticDetector(BaseEstimator):
    """Base class: per-image characteristics from the classifier, then a logistic regression.

    Subclasses set ``KIND`` and implement :meth:`_fit_statistics` (on the reference natural images),
    :meth:`_characteristics_torch` (images -> ``(logits, (N, F) characteristics)``, differentiable),
    :meth:`_state` / :meth:`_restore` (what is saved) and ``characteristic_names_``.
    Parameters every subclass has: ``model``, ``seed``, ``batch_size``, ``lr_cv`` (folds of
    ``LogisticRegressionCV``).
    """

    KIND: ClassVar[str] = "baseline"

    # -- subclass hooks --------------------------------------------------------------------------
    @abstractmethod
    def _validate_params(self) -> None: ...

    def _reference_split(self, n: int) -> int:
        """How many of ``n`` natural images fit the statistics (the rest train the regression):
        the share ``reference_share`` by default."""
        return int(round(self.reference_share * n))

    @abstractmethod
    def _fit_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit the unsupervised part on natural images ``x`` with class ``labels``."""

    @abstractmethod
    def _characteristics_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, K), characteristics (N, F) float64)`` with gradients to ``x``."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Fitted statistics: (tensors for safetensors, JSON-able values)."""

    @abstractmethod
    def _restore(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Inverse of :meth:`_state`."""

    # -- checks ----------------------------------------------------------------------------------
    def _check_common(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module classifier, got {type(self.model).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an int, got {self.seed!r}")
        check_int(self.batch_size, "batch_size")
        check_int(self.lr_cv, "lr_cv", low=2)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise InputError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with natural and "
                             "adversarial images before using it.")

    # -- characteristics -------------------------------------------------------------------------
    def characteristics(self, images: torch.Tensor) -> np.ndarray:
        """Per-image characteristics (N, F) before the regression (e.g. one Mahalanobis score per layer)."""
        x = check_images(images, "images")
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for i in range(0, len(x), self.batch_size):
                with torch.no_grad() if not self._needs_input_grad() else torch.enable_grad():
                    out.append(self._characteristics_torch(x[i:i + self.batch_size])[1].detach())
        finally:
            self.model.train(was_training)
        if not out:
            raise InputError("images has 0 rows; pass at least one image")
        return torch.cat(out).double().numpy()

    def _needs_input_grad(self) -> bool:
        """True when the characteristics themselves need an input gradient (Mahalanobis pre-processing)."""
        return False

    # -- fit ---------------------------------------------------------------------------------------
    def fit(self, natural_images: torch.Tensor, adversarial_images: torch.Tensor,
            natural_labels: torch.Tensor | None = None) -> FeatureLogisticDetector:
        """Fit the statistics on part of the natural images, then the regression on the rest vs the adversarials.

        ``natural_labels`` (N,) are the classes of the natural images (default: the classifier's
        own predictions, which equal the labels when, as in the robustness job, only correctly
        classified images are passed).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self._check_common()
        self._validate_params()
        nat = check_images(natural_images, "natural_images")
        adv = check_images(adversarial_images, "adversarial_images")
        if nat.shape[1:] != adv.shape[1:]:
            raise InputError(f"natural and adversarial images differ in shape: {tuple(nat.shape[1:])} vs {tuple(adv.shape[1:])}")
        if natural_labels is None:
            labels = self._predict_logits(nat).argmax(1)
        else:
            labels = check_labels(natural_labels, len(nat), name="natural_labels")
        n_ref = self._reference_split(len(nat))
        if n_ref < 2 or len(nat) - n_ref < 2 or len(adv) < 2:
            raise InputError(f"{type(self).__name__} needs at least {n_ref + 2} natural images ({n_ref} to fit its "
                             f"statistics, >= 2 for the regression) and >= 2 adversarial ones; got {len(nat)} and {len(adv)}")
        perm = torch.randperm(len(nat), generator=torch.Generator().manual_seed(self.seed))
        ref, rest = perm[:n_ref].sort().values, perm[n_ref:].sort().values
        self.classes_ = np.array([0, 1])
        self.n_classes_ = int(self._predict_logits(nat[:1]).shape[1])
        self._fit_statistics(nat[ref], labels[ref])
        self.coef_ = np.zeros(1)  # lets characteristics() pass the fitted check while the regression is fitted
        f_nat, f_adv = self.characteristics(nat[rest]), self.characteristics(adv)
        feats = np.concatenate([f_nat, f_adv])
        if not np.isfinite(feats).all():
            raise InputError(f"{type(self).__name__} characteristics contain NaN or Inf; check the images and settings")
        y = np.concatenate([np.zeros(len(f_nat)), np.ones(len(f_adv))])
        scaler = StandardScaler().fit(feats)
        # Constant characteristics (scale 0) would divide by zero: sklearn sets their scale to 1.
        self.lr_C_ = _cross_validated_C(scaler.transform(feats), y, min(self.lr_cv, len(f_nat), len(f_adv)), self.seed)
        lr = LogisticRegression(C=self.lr_C_, max_iter=1000, class_weight="balanced").fit(scaler.transform(feats), y)
        self.scaler_mean_ = scaler.mean_.astype(np.float64)
        self.scaler_scale_ = scaler.scale_.astype(np.float64)
        self.coef_ = lr.coef_.reshape(-1).astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        self.n_reference_, self.n_natural_, self.n_adversarial_ = int(n_ref), int(len(rest)), int(len(adv))
        self.reference_index_ = ref.numpy()  # positions of the natural images that fitted the statistics
        self.classifier_sha256_ = classifier_sha256(self.model)
        return self

    @torch.no_grad()
    def _predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return torch.cat([self.model(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        finally:
            self.model.train(was_training)

    # -- scoring -----------------------------------------------------------------------------------
    def decision_function(self, images: torch.Tensor) -> np.ndarray:
        """The regression's logit (N,); higher = more adversarial."""
        self._check_fitted()
        f = self.characteristics(images)
        return ((f - self.scaler_mean_) / self.scaler_scale_) @ self.coef_ + self.intercept_

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """(N, 2) probabilities of [natural, adversarial]."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(images)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """1 (adversarial) where the logit is > 0, else 0."""
        return (self.decision_function(images) > 0).astype(np.int64)

    def detect(self, images: torch.Tensor) -> np.ndarray:
        """True where the detector rejects (logit > 0); a :class:`~safetynet.evaluation.defence.Defence` shifts it by its threshold."""
        return self.decision_function(images) > 0

    def logits_and_score_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classifier logits (N, K), detector logit (N,) float64)`` with gradients to ``x`` (for adaptive attacks)."""
        self._check_fitted()
        was_training = self.model.training
        self.model.eval()
        try:
            logits, f = self._characteristics_torch(x)
        finally:
            self.model.train(was_training)
        mean = torch.as_tensor(self.scaler_mean_, device=f.device)
        scale = torch.as_tensor(self.scaler_scale_, device=f.device)
        coef = torch.as_tensor(self.coef_, device=f.device)
        return logits, ((f.double() - mean) / scale) @ coef + self.intercept_

    def score_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The detector logit (N,) as a differentiable function of the images."""
        return self.logits_and_score_torch(x)[1]

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``detector.safetensors`` + ``detector.json`` into ``directory`` (atomically each)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, values = self._state()
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(directory / WEIGHTS, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp))
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params(deep=False).items() if k != "model"}
        write_json_atomic(directory / CONFIG, {
            "format": f"safetynet-{self.KIND}-detector", "format_version": 1, "params": params, "state": values,
            "regression": {"scaler_mean": self.scaler_mean_.tolist(), "scaler_scale": self.scaler_scale_.tolist(),
                           "coef": self.coef_.tolist(), "intercept": self.intercept_, "C": self.lr_C_},
            "counts": {"reference": self.n_reference_, "natural": self.n_natural_, "adversarial": self.n_adversarial_},
            "n_classes": self.n_classes_, "classifier_sha256": self.classifier_sha256_})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: nn.Module, check_classifier: bool = True) -> Any:
        """Rebuild a fitted detector for ``model``; refuses a different classifier unless ``check_classifier=False``."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(f"{directory} is not a saved {cls.__name__} (needs {CONFIG} and {WEIGHTS}); save one with .save")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({exc}); re-save the detector") from None
        fmt = f"safetynet-{cls.KIND}-detector"
        if cfg.get("format") != fmt or cfg.get("format_version") != 1:
            raise CheckpointError(f"{cfg_path} is not a {fmt} v1 file (got {cfg.get('format')!r} v{cfg.get('format_version')!r})")
        params = {k: (tuple(v) if isinstance(v, list) and k in cls._TUPLE_PARAMS else v) for k, v in cfg["params"].items()}
        det = cls(model, **params)
        det._check_common()
        det._validate_params()
        fp = classifier_sha256(model)
        if check_classifier and fp != cfg["classifier_sha256"]:
            raise CheckpointError(f"the detector in {directory} was fitted on another classifier (weights sha256 differ); "
                                  "pass the same model, or check_classifier=False to use it anyway")
        try:
            tensors = load_file(str(w_path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{w_path} is not a readable safetensors file ({str(exc).splitlines()[0]}); re-save it") from None
        det._restore(tensors, cfg["state"])
        reg = cfg["regression"]
        det.scaler_mean_ = np.asarray(reg["scaler_mean"], dtype=np.float64)
        det.scaler_scale_ = np.asarray(reg["scaler_scale"], dtype=np.float64)
        det.coef_ = np.asarray(reg["coef"], dtype=np.float64)
        det.intercept_, det.lr_C_ = float(reg["intercept"]), float(reg["C"])
        c = cfg["counts"]
        det.n_reference_, det.n_natural_, det.n_adversarial_ = int(c["reference"]), int(c["natural"]), int(c["adversarial"])
        det.n_classes_ = int(cfg["n_classes"])
        det.classifier_sha256_ = fp
        det.classes_ = np.array([0, 1])
        return det

    _TUPLE_PARAMS: ClassVar[tuple[str, ...]] = ("layers",)
