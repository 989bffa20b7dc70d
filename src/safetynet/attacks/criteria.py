"""Success criteria: what an attack must achieve, as ``criterion(x_adv, logits) -> bool mask``.

A criterion sees the candidate adversarial batch *and* the classifier's logits on it, so a
criterion may also call other models (a later ``Undetected(detector)`` scores ``x_adv`` itself).
Criteria combine with ``&``: ``Misclassification(y) & Undetected(safetynet)`` is a type-II goal.

Besides the mask, a criterion can tell attacks which classes it is about:

* :meth:`Criterion.loss_classes` gives the classes a gradient attack's cross-entropy uses
  (the true labels, ascended, or the targets, descended);
* :meth:`Criterion.excluded_classes` gives, per sample, the classes the adversarial top-1
  label must avoid; DeepFool walks to the nearest linearised boundary out of that set.

:meth:`Criterion.bind` is called once by :class:`~safetynet.attacks.base.Attack` with the model,
the clean batch and the number of classes (``TopKMisclassification`` reads the clean top-k
there; criteria that need nothing skip the extra forward pass), and
:meth:`Criterion.subset` restricts a criterion to the samples an attack is still working on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .._validation import check_labels
from ..errors import InputError

__all__ = [
    "And",
    "Criterion",
    "Misclassification",
    "TargetedMisclassification",
    "TopKMisclassification",
    "as_criterion",
]


class Criterion(ABC):
    """Decides per sample whether a candidate is adversarial; subclasses implement ``__call__``."""

    @abstractmethod
    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return a bool tensor (N,): True where ``x_adv`` (with classifier ``logits``) is adversarial."""

    def bind(self, model: nn.Module, x: torch.Tensor, num_classes: int) -> Criterion:
        """Return the criterion for the clean batch ``x`` of a ``num_classes`` model; checks sizes."""
        return self

    def subset(self, index: torch.Tensor) -> Criterion:
        """Return the criterion restricted to the samples ``index`` (int64) of the batch."""
        return self

    def loss_classes(self) -> tuple[torch.Tensor, bool] | None:
        """``(classes, targeted)`` for a cross-entropy attack, or None if the criterion names no class."""
        return None

    def excluded_classes(self, num_classes: int) -> torch.Tensor | None:
        """Bool (N, num_classes): classes the adversarial top-1 must avoid; None if not class-based."""
        return None

    def __and__(self, other: Criterion) -> And:
        if not isinstance(other, Criterion):
            return NotImplemented
        return And(self, other)


def _check_batch(name: str, n_criterion: int, x: torch.Tensor) -> None:
    if n_criterion != x.shape[0]:
        raise InputError(f"{name} holds {n_criterion} labels but the batch has {x.shape[0]} images; "
                         "pass one label per image")


class Misclassification(Criterion):
    """Adversarial when the top-1 label differs from the true label."""

    def __init__(self, labels: torch.Tensor) -> None:
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise InputError(f"labels must be a 1-D integer tensor (N,), got "
                             f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
        self.labels = check_labels(labels, labels.shape[0])

    def bind(self, model: nn.Module, x: torch.Tensor, num_classes: int) -> Misclassification:
        _check_batch(type(self).__name__, len(self.labels), x)
        check_labels(self.labels, len(self.labels), num_classes)
        return Misclassification(self.labels.to(x.device))

    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) != self.labels

    def subset(self, index: torch.Tensor) -> Misclassification:
        return Misclassification(self.labels[index])

    def loss_classes(self) -> tuple[torch.Tensor, bool]:
        return self.labels, False

    def excluded_classes(self, num_classes: int) -> torch.Tensor:
        return nn.functional.one_hot(self.labels, num_classes).bool()

    def __repr__(self) -> str:
        return f"Misclassification(<{len(self.labels)} labels>)"


class TargetedMisclassification(Criterion):
    """Adversarial when the top-1 label equals the target class."""

    def __init__(self, targets: torch.Tensor) -> None:
        if not isinstance(targets, torch.Tensor) or targets.ndim != 1:
            raise InputError("targets must be a 1-D integer tensor (N,) of target classes")
        self.targets = check_labels(targets, targets.shape[0], name="targets")

    def bind(self, model: nn.Module, x: torch.Tensor, num_classes: int) -> TargetedMisclassification:
        _check_batch(type(self).__name__, len(self.targets), x)
        check_labels(self.targets, len(self.targets), num_classes, name="targets")
        return TargetedMisclassification(self.targets.to(x.device))

    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) == self.targets

    def subset(self, index: torch.Tensor) -> TargetedMisclassification:
        return TargetedMisclassification(self.targets[index])

    def loss_classes(self) -> tuple[torch.Tensor, bool]:
        return self.targets, True

    def excluded_classes(self, num_classes: int) -> torch.Tensor:
        return ~nn.functional.one_hot(self.targets, num_classes).bool()

    def __repr__(self) -> str:
        return f"TargetedMisclassification(<{len(self.targets)} targets>)"


class TopKMisclassification(Criterion):
    """Adversarial when the top-1 label lies outside the clean example's top-``k`` classes.

    The paper's "DeepFool-5" (Lu et al. 2017, Fig. 3) must force the adversarial label out of
    the original example's top 5. The excluded set is the clean top-``k`` of the attacked model
    plus the true label (which matters only for clean images the model already gets wrong).
    It is read from the clean logits when an attack binds the criterion; ``clean_logits``
    binds it up front instead.
    """

    def __init__(self, labels: torch.Tensor, k: int = 5, *, clean_logits: torch.Tensor | None = None) -> None:
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise InputError("labels must be a 1-D integer tensor (N,)")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        self.labels = check_labels(labels, labels.shape[0])
        self.k = k
        self._excluded: torch.Tensor | None = None
        if clean_logits is not None:
            self._excluded = self._exclusion(clean_logits)

    def _exclusion(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[0] != len(self.labels):
            raise InputError(f"clean logits must have shape ({len(self.labels)}, num_classes), got {tuple(logits.shape)}")
        c = logits.shape[1]
        if self.k >= c:
            raise InputError(f"k={self.k} leaves no class outside the top-k of a {c}-class model; use k < {c}")
        check_labels(self.labels, len(self.labels), c)
        excluded = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        excluded.scatter_(1, logits.topk(self.k, dim=1).indices, True)
        excluded[torch.arange(len(self.labels), device=logits.device), self.labels.to(logits.device)] = True
        return excluded  # (N, C)

    @classmethod
    def _bound(cls, labels: torch.Tensor, k: int, excluded: torch.Tensor) -> TopKMisclassification:
        new = cls(labels, k)
        new._excluded = excluded
        return new

    def bind(self, model: nn.Module, x: torch.Tensor, num_classes: int) -> TopKMisclassification:
        _check_batch(type(self).__name__, len(self.labels), x)
        if self._excluded is not None:
            if self._excluded.shape != (len(x), num_classes):
                raise InputError(f"clean_logits had shape {tuple(self._excluded.shape)}, "
                                 f"the model gives {(len(x), num_classes)}")
            return self
        with torch.no_grad():
            logits = model(x)
        return self._bound(self.labels.to(x.device), self.k, self._exclusion(logits))

    def _require_bound(self) -> torch.Tensor:
        if self._excluded is None:
            raise InputError("TopKMisclassification needs the clean top-k: pass it to an attack, "
                             "or call .bind(model, x, num_classes) / give clean_logits=")
        return self._excluded

    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        excluded = self._require_bound()
        return ~excluded.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)

    def subset(self, index: torch.Tensor) -> TopKMisclassification:
        return self._bound(self.labels[index], self.k, self._require_bound()[index])

    def loss_classes(self) -> tuple[torch.Tensor, bool]:
        return self.labels, False

    def excluded_classes(self, num_classes: int) -> torch.Tensor:
        excluded = self._require_bound()
        if excluded.shape[1] != num_classes:
            raise InputError(f"criterion was bound to a {excluded.shape[1]}-class model, not {num_classes} classes")
        return excluded

    def __repr__(self) -> str:
        return f"TopKMisclassification(<{len(self.labels)} labels>, k={self.k})"


class And(Criterion):
    """Adversarial when both criteria hold (``a & b``)."""

    def __init__(self, a: Criterion, b: Criterion) -> None:
        if not isinstance(a, Criterion) or not isinstance(b, Criterion):
            raise InputError("And combines two Criterion objects")
        self.a, self.b = a, b

    def __call__(self, x_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.a(x_adv, logits) & self.b(x_adv, logits)

    def bind(self, model: nn.Module, x: torch.Tensor, num_classes: int) -> And:
        return And(self.a.bind(model, x, num_classes), self.b.bind(model, x, num_classes))

    def subset(self, index: torch.Tensor) -> And:
        return And(self.a.subset(index), self.b.subset(index))

    def loss_classes(self) -> tuple[torch.Tensor, bool] | None:
        return self.a.loss_classes() or self.b.loss_classes()

    def excluded_classes(self, num_classes: int) -> torch.Tensor | None:
        ea, eb = self.a.excluded_classes(num_classes), self.b.excluded_classes(num_classes)
        if ea is None or eb is None:
            return eb if ea is None else ea
        return ea | eb

    def __repr__(self) -> str:
        return f"({self.a!r} & {self.b!r})"


def as_criterion(criterion: Criterion | torch.Tensor) -> Criterion:
    """A :class:`Criterion` as is; a plain labels tensor as ``Misclassification(labels)``."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, torch.Tensor):
        return Misclassification(criterion)
    raise InputError(f"criterion must be a Criterion or a labels tensor (N,), got {type(criterion).__name__}")
