"""The LID detector of Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle, Bailey,
"Characterizing Adversarial Subspaces Using Local Intrinsic Dimensionality", ICLR 2018
[https://arxiv.org/abs/1801.02613].

Per tapped layer the activations are flattened and the local intrinsic dimensionality of each
image is estimated with the maximum-likelihood estimator of Levina & Bickel / Amsaleg et al.
(their Eq. 3) from its ``k`` nearest neighbours in a minibatch of natural images,

    ``LID(x) = -( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^{-1}``

with ``r_i`` the Euclidean distance to the i-th nearest neighbour (:func:`lid_mle`). A logistic
regression over the layers' LIDs separates natural from adversarial examples.

**Minibatch.** Ma et al. estimate every image's LID against the natural images of its own
minibatch (size 100 for CIFAR-10, k = 20), at training and at test time. A deployed detector must
score any batch, even one image, so here the reference minibatch is fixed: ``reference_size``
natural fit images (seeded), kept with the detector; fit and test images are all estimated
against it (none of them belongs to it, so no neighbour is dropped: Ma et al.'s code drops the
nearest neighbour of adversarial points too, a quirk of reusing the self-excluding estimator).
The estimator itself is the paper's; :func:`lid_mle` also excludes self-matches when the
queries are the reference (``exclude_self=True``).

The score is differentiable in the images (distances, then the k smallest with ``topk``), so
adaptive attacks get its exact gradient (:meth:`LIDDetector.score_torch`).

Example::

    det = LIDDetector(model, layers=model.late_relus, k=20).fit(x_nat, x_adv)
    det.decision_function(x_test)        # higher = more adversarial
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import InputError
from ..taps import extract_activations, forward_with_taps
from ._baseline import FeatureLogisticDetector, check_int, tapped_layers

__all__ = ["LIDDetector", "lid_mle"]

_TINY = 1e-12


def lid_mle(queries: torch.Tensor, reference: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """Maximum-likelihood LID of each query (N,) from its ``k`` nearest neighbours in ``reference``.

    ``queries`` (N, D), ``reference`` (M, D). ``exclude_self``: the queries *are* the reference
    (same rows), so each one's zero distance to itself is skipped. Differentiable in both inputs.
    """
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise InputError(f"queries and reference must be (N, D) and (M, D), got {tuple(queries.shape)} and {tuple(reference.shape)}")
    avail = reference.shape[0] - (1 if exclude_self else 0)
    if k < 2 or k > avail:
        raise InputError(f"k must be in [2, {avail}] for a reference of {reference.shape[0]} points, got {k}")
    q, r = queries.double(), reference.double()
    # Squared distances by expansion, then sqrt: cdist's backward is unstable at zero distance.
    d2 = (q * q).sum(1, keepdim=True) + (r * r).sum(1)[None] - 2.0 * q @ r.T  # (N, M)
    dist = d2.clamp_min(_TINY).sqrt()
    nearest = torch.topk(dist, k + (1 if exclude_self else 0), dim=1, largest=False).values  # ascending
    if exclude_self:
        nearest = nearest[:, 1:]
    logs = torch.log(nearest / nearest[:, -1:])  # (N, k), last column 0
    return -k / logs.sum(1).clamp_max(-_TINY)


class LIDDetector(FeatureLogisticDetector):
    """Ma et al. (ICLR 2018): minibatch LID per layer, then a logistic regression.

    Args:
        model: the classifier (inputs in [0, 1]); never modified.
        layers: module names to tap (default: the model's ``late_relus``).
        k: nearest neighbours (Ma et al. CIFAR-10: 20). (Default: 20)
        reference_size: natural images in the fixed reference minibatch (Ma et al.: 100). (Default: 100)
        lr_cv: folds of the regression's cross-validated C. seed: which natural images form the
            reference. batch_size: images per forward pass.

    Fitted: ``reference_`` {layer: (reference_size, D) activations}, ``coef_``, ``intercept_``.
    """

    KIND: ClassVar[str] = "lid"

    def __init__(self, model: Any, layers: tuple[str, ...] | list[str] | None = None, k: int = 20,
                 reference_size: int = 100, lr_cv: int = 5, seed: int = 0, batch_size: int = 128) -> None:
        self.model = model
        self.layers = layers
        self.k = k
        self.reference_size = reference_size
        self.lr_cv = lr_cv
        self.seed = seed
        self.batch_size = batch_size

    def _validate_params(self) -> None:
        check_int(self.k, "k", low=2)
        check_int(self.reference_size, "reference_size", low=3)
        if self.k >= self.reference_size:
            raise InputError(f"k={self.k} must be smaller than reference_size={self.reference_size}")
        self.layers_ = tapped_layers(self.model, self.layers)

    def _reference_split(self, n: int) -> int:
        if n < self.reference_size + 2:
            raise InputError(f"LIDDetector needs more than reference_size={self.reference_size} natural images "
                             f"(the reference minibatch, plus some for the regression); got {n}")
        return self.reference_size

    @property
    def characteristic_names_(self) -> list[str]:
        return [f"lid:{n}" for n in self.layers_]

    def _fit_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        _, acts = extract_activations(self.model, x, self.layers_, batch_size=self.batch_size, flatten=True)
        self.reference_ = {n: acts[n].double() for n in self.layers_}

    def _characteristics_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, acts = forward_with_taps(self.model, x, self.layers_)
        lids = [lid_mle(acts[n].flatten(1), self.reference_[n].to(x.device), self.k) for n in self.layers_]
        return logits, torch.stack(lids, 1)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {f"reference/{n}": self.reference_[n] for n in self.layers_}, {"layers": self.layers_}

    def _restore(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self.layers_ = list(values["layers"])
        self.reference_ = {n: tensors[f"reference/{n}"].double() for n in self.layers_}
