"""The Mahalanobis detector of Lee, Lee, Lee, Shin, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018 [https://arxiv.org/abs/1807.03888].

Per tapped layer ``l`` the features are the feature map averaged over space (``(N, C, H, W) ->
(N, C)``; fully connected taps are used as they are). On natural images of each class ``c`` the
detector fits class means ``mu_{l,c}`` and one *tied* covariance ``Sigma_l`` (the pooled
within-class covariance, their Eq. 1); its precision is the pseudo-inverse, as in the authors'
code (``sklearn.covariance.EmpiricalCovariance().precision_``). The per-layer characteristic is
the distance to the closest class,

    ``d_l(x) = min_c (f_l(x) - mu_{l,c})^T Sigma_l^+ (f_l(x) - mu_{l,c})``

(Lee et al.'s confidence score is ``M_l = -d_l / 2``; we keep ``d_l`` so that higher means more
adversarial). **Input pre-processing** (their Eq. 4): before scoring, each image is moved by
``noise`` in pixel units against the sign of the gradient of ``d_l`` for its closest class,
``x' = x - noise * sign(grad_x d_l(x))``, which raises the confidence of natural images more than
that of adversarial ones; one pre-processed image per layer, as in their code. ``noise`` is their
"magnitude" (they pick it from {0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01} on validation data;
their inputs are normalised and the gradient divided by the std, so their magnitude is a pixel
step as ours). Unlike their code (normalised inputs, never clipped) we clip ``x'`` to [0, 1],
the range our classifiers take. A logistic regression over the layers' ``d_l`` separates
natural from adversarial examples (their "feature ensemble").

Class means use the labels passed to ``fit`` (default: the classifier's predictions); the
statistics are fitted on a seeded share ``reference_share`` of the natural images and the
regression on the rest plus the adversarial images (Lee et al. fit the Gaussians on the training
set and the regression on separate validation data).

``score_torch`` is exact: ``sign`` has zero derivative almost everywhere, so the gradient of the
pre-processed score with respect to ``x`` is that of ``d_l(x + const)``.

Example::

    det = MahalanobisDetector(model, layers=model.late_relus, noise=0.0014).fit(x_nat, x_adv)
    det.decision_function(x_test)        # higher = more adversarial
    det.layer_scores(x_test)             # (N, L) the d_l, before the regression
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import InputError
from ..taps import extract_activations, forward_with_taps
from ._baseline import FeatureLogisticDetector, check_number, tapped_layers

__all__ = ["MahalanobisDetector", "spatial_mean"]


def spatial_mean(a: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C) float64 by averaging over space; (N, D) stays as it is."""
    a = a.double()  # average in float64: the float32 sum of a 16x16 map loses ~1e-6 relative
    return a.mean(dim=(2, 3)) if a.ndim == 4 else a.flatten(1)


class MahalanobisDetector(FeatureLogisticDetector):
    """Lee et al. (NeurIPS 2018): class-conditional Gaussians with a tied covariance per layer.

    Args:
        model: the classifier (inputs in [0, 1]); never modified.
        layers: module names to tap (default: the model's ``late_relus``).
        noise: input pre-processing step in pixel units (0 disables it). (Default: 0.0014)
        reference_share: share of the natural images that fit the Gaussians (the rest train the
            regression). (Default: 0.5)
        lr_cv: folds of the regression's cross-validated C. (Default: 5)
        seed: the natural split. batch_size: images per forward pass.

    Fitted: ``means_`` {layer: (K, C)}, ``precision_`` {layer: (C, C)}, ``coef_``, ``intercept_``.
    """

    KIND: ClassVar[str] = "mahalanobis"

    def __init__(self, model: Any, layers: tuple[str, ...] | list[str] | None = None, noise: float = 0.0014,
                 reference_share: float = 0.5, lr_cv: int = 5, seed: int = 0, batch_size: int = 128) -> None:
        self.model = model
        self.layers = layers
        self.noise = noise
        self.reference_share = reference_share
        self.lr_cv = lr_cv
        self.seed = seed
        self.batch_size = batch_size

    def _validate_params(self) -> None:
        check_number(self.noise, "noise")
        check_number(self.reference_share, "reference_share", low_open=True, high=1.0)
        self.layers_ = tapped_layers(self.model, self.layers)

    def _needs_input_grad(self) -> bool:
        return self.noise > 0

    @property
    def characteristic_names_(self) -> list[str]:
        return [f"mahalanobis:{n}" for n in self.layers_]

    # -- fit ---------------------------------------------------------------------------------------
    def _fit_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        _, acts = extract_activations(self.model, x, self.layers_, batch_size=self.batch_size, flatten=False)
        y = labels.numpy()
        k = self.n_classes_
        missing = sorted(set(range(k)) - set(y.tolist()))
        if missing:
            raise InputError(f"no natural image of class(es) {missing} among the {len(y)} that fit the Gaussians; "
                             "pass more natural images (every class needs at least one)")
        self.means_, self.precision_ = {}, {}
        for name in self.layers_:
            f = spatial_mean(acts[name]).double().numpy()  # (N, C)
            means = np.stack([f[y == c].mean(0) for c in range(k)])  # (K, C)
            centred = f - means[y]
            cov = centred.T @ centred / len(f)  # tied (pooled within-class) covariance
            self.means_[name] = torch.from_numpy(means)
            self.precision_[name] = torch.from_numpy(np.linalg.pinv(cov, hermitian=True))

    # -- scores ------------------------------------------------------------------------------------
    def _distances(self, name: str, a: torch.Tensor) -> torch.Tensor:
        """(N, K) squared Mahalanobis distances of the layer's features to every class mean."""
        f = spatial_mean(a).double()  # (N, C)
        diff = f[:, None, :] - self.means_[name].to(f.device)[None]  # (N, K, C)
        return torch.einsum("nkc,cd,nkd->nk", diff, self.precision_[name].to(f.device), diff)

    def _characteristics_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, acts = forward_with_taps(self.model, x, self.layers_)
        if self.noise == 0:
            return logits, torch.stack([self._distances(n, acts[n]).amin(1) for n in self.layers_], 1)
        per_layer = []
        for n in self.layers_:
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                _, a = forward_with_taps(self.model, xg, n)
                d = self._distances(n, a[n])
                closest = d.detach().argmin(1, keepdim=True)
                (g,) = torch.autograd.grad(d.gather(1, closest).sum(), xg)
            # Towards the closest class mean (lower distance = higher confidence); the sign is a
            # constant for autograd (derivative 0 a.e.), so the score's gradient stays exact.
            xp = (x - self.noise * g.sign()).clamp(0.0, 1.0)
            _, a = forward_with_taps(self.model, xp, n)
            per_layer.append(self._distances(n, a[n]).amin(1))
        return logits, torch.stack(per_layer, 1)

    def layer_scores(self, images: torch.Tensor) -> np.ndarray:
        """(N, L) per-layer distances ``d_l`` (after pre-processing), before the regression."""
        self._check_fitted()
        return self.characteristics(images)

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"means/{n}": self.means_[n] for n in self.layers_}
        tensors.update({f"precision/{n}": self.precision_[n] for n in self.layers_})
        return tensors, {"layers": self.layers_}

    def _restore(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self.layers_ = list(values["layers"])
        self.means_ = {n: tensors[f"means/{n}"].double() for n in self.layers_}
        self.precision_ = {n: tensors[f"precision/{n}"].double() for n in self.layers_}
