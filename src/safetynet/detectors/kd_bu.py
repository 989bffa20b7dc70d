"""The KD+BU detector of Feinman, Curtin, Shintre, Gardner, "Detecting Adversarial Samples from
Artifacts", 2017 [https://arxiv.org/abs/1703.00410].

Two characteristics per image, then a logistic regression (their "combined" detector):

* **Kernel density (KD)** in the last hidden layer ``z`` (the input of the classifier's final
  linear layer): for the predicted class ``t``, the Gaussian kernel density estimate over the
  natural fit images of class ``t``, as log density exactly as scikit-learn's
  ``KernelDensity(kernel="gaussian", bandwidth=h).score_samples`` (what the authors' code calls),

      ``log KD(x) = logsumexp_i(-||z(x) - z_i||^2 / (2 h^2)) - log n_t - (D/2) log(2 pi h^2)``.

  Their bandwidths: MNIST 1.20, CIFAR-10 0.26, SVHN 1.00, chosen for their networks' feature
  scales; ``bandwidth`` is configurable (default 0.26, their CIFAR-10 value).
* **Bayesian uncertainty (BU)** from Monte-Carlo dropout: ``T`` stochastic forward passes, the
  variance over passes of the softmax output averaged over classes (the authors' code:
  ``preds_mc.var(axis=0).mean(axis=1)``).

**Deviation: where the dropout comes from.** Feinman et al.'s networks are trained with dropout
and keep it on at test time. Our ResNet-20 has no dropout layer, so we insert one at inference on
the penultimate features ``z``: pass ``t`` computes ``head(m_t * z / (1 - p))`` with Bernoulli
masks ``m_t`` of keep probability ``1 - p`` (``dropout``, default 0.5, Feinman et al.'s rate).
The ``T`` masks are drawn once at ``fit`` (seeded) and stored, so the score is a deterministic
and differentiable function of the image: the same image always gets the same uncertainty
(no randomised defence), and adaptive attacks see the exact gradient of what is deployed.

Example::

    det = KDBUDetector(model, bandwidth=0.26, dropout=0.5, mc_samples=50).fit(x_nat, x_adv)
    det.decision_function(x_test)        # higher = more adversarial
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError
from ._baseline import FeatureLogisticDetector, check_int, check_number, head_module

__all__ = ["KDBUDetector", "gaussian_kde_log_density", "head_inputs"]


def head_inputs(model: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, z)``: one forward pass and the input ``z`` (N, D) of the module ``head``; keeps the graph."""
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise InputError(f"the head layer ran {len(seen)} times in one forward pass; give head= the final linear layer")
    return logits, seen[0].flatten(1)


def gaussian_kde_log_density(z: torch.Tensor, points: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Log density (N,) of a Gaussian KDE over ``points`` (M, D) at ``z`` (N, D), normalised as scikit-learn's."""
    zd, pd = z.double(), points.double()
    d2 = ((zd * zd).sum(1, keepdim=True) + (pd * pd).sum(1)[None] - 2.0 * zd @ pd.T).clamp_min(0)  # (N, M)
    dim = z.shape[1]
    log_norm = math.log(points.shape[0]) + 0.5 * dim * math.log(2 * math.pi * bandwidth ** 2)
    return torch.logsumexp(-d2 / (2 * bandwidth ** 2), dim=1) - log_norm


class KDBUDetector(FeatureLogisticDetector):
    """Feinman et al. (2017): kernel density + Monte-Carlo-dropout uncertainty, then a logistic regression.

    Args:
        model: the classifier (inputs in [0, 1]); never modified.
        head: name of its final linear layer (default: the last ``nn.Linear``); KD uses its input.
        bandwidth: Gaussian kernel width ``h`` in feature units. (Default: 0.26, their CIFAR-10 value)
        dropout: drop probability of the inserted dropout on the head's input. (Default: 0.5)
        mc_samples: Monte-Carlo passes ``T``. (Default: 50, as the authors)
        reference_share: share of the natural images that form the densities (the rest train the
            regression). (Default: 0.5)
        lr_cv, seed (the split and the dropout masks), batch_size.

    Fitted: ``class_features_`` {class: (n_c, D)}, ``masks_`` (T, D), ``coef_``, ``intercept_``.
    """

    KIND: ClassVar[str] = "kdbu"
    _TUPLE_PARAMS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: Any, head: str | None = None, bandwidth: float = 0.26, dropout: float = 0.5,
                 mc_samples: int = 50, reference_share: float = 0.5, lr_cv: int = 5, seed: int = 0,
                 batch_size: int = 128) -> None:
        self.model = model
        self.head = head
        self.bandwidth = bandwidth
        self.dropout = dropout
        self.mc_samples = mc_samples
        self.reference_share = reference_share
        self.lr_cv = lr_cv
        self.seed = seed
        self.batch_size = batch_size

    def _validate_params(self) -> None:
        check_number(self.bandwidth, "bandwidth", low_open=True)
        check_number(self.dropout, "dropout", low_open=True, high=1.0)
        check_int(self.mc_samples, "mc_samples", low=2)
        check_number(self.reference_share, "reference_share", low_open=True, high=1.0)
        self.head_name_, self.head_ = head_module(self.model, self.head)

    characteristic_names_ = ["kd", "bu"]

    def _fit_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        feats = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                feats.append(head_inputs(self.model, self.head_, x[i:i + self.batch_size])[1].double())
        z = torch.cat(feats)
        y = labels
        missing = sorted(set(range(self.n_classes_)) - set(y.tolist()))
        if missing:
            raise InputError(f"no natural image of class(es) {missing} among the {len(y)} that form the densities; "
                             "pass more natural images (every class needs at least one)")
        self.class_features_ = {c: z[y == c] for c in range(self.n_classes_)}
        gen = torch.Generator().manual_seed(self.seed)
        self.masks_ = (torch.rand(self.mc_samples, z.shape[1], generator=gen) >= self.dropout).double()

    def kernel_density(self, z: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Log KD (N,) of features ``z`` (N, D) under the density of each image's predicted class ``pred``."""
        out = torch.empty(len(z), dtype=torch.float64, device=z.device)
        parts = []
        for c in torch.unique(pred).tolist():
            sel = (pred == c).nonzero().squeeze(1)
            parts.append((sel, gaussian_kde_log_density(z[sel], self.class_features_[c].to(z.device), self.bandwidth)))
        # Index assignment keeps the autograd graph of every part.
        for sel, v in parts:
            out = out.index_put((sel,), v)
        return out

    def uncertainty(self, z: torch.Tensor) -> torch.Tensor:
        """MC-dropout uncertainty (N,): variance over the T stored masks of the softmax, averaged over classes."""
        w, b = self.head_.weight.double(), self.head_.bias
        zs = z.double()[None] * self.masks_.to(z.device)[:, None, :] / (1.0 - self.dropout)  # (T, N, D)
        logits = zs @ w.T + (0.0 if b is None else b.double())  # (T, N, K)
        probs = logits.softmax(-1)
        return probs.var(dim=0, unbiased=False).mean(-1)

    def _characteristics_torch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, z = head_inputs(self.model, self.head_, x)
        pred = logits.detach().argmax(1)
        return logits, torch.stack([self.kernel_density(z, pred), self.uncertainty(z)], 1)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"class/{c}": v for c, v in self.class_features_.items()}
        tensors["masks"] = self.masks_
        return tensors, {"head": self.head_name_, "classes": sorted(self.class_features_)}

    def _restore(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self.head_name_, self.head_ = head_module(self.model, values["head"])
        self.class_features_ = {int(c): tensors[f"class/{c}"].double() for c in values["classes"]}
        self.masks_ = tensors["masks"].double()
        if self.masks_.shape[1] != self.head_.in_features:
            raise InputError(f"saved dropout masks have {self.masks_.shape[1]} units but the head takes {self.head_.in_features}")
