"""The attack contract (after Foolbox 3): subclasses write ``run``; the final ``__call__`` owns the rest.

``attack(model, x, criterion, eps=...)`` validates the inputs, puts the model in eval mode (and
restores it), calls ``run``, then clips what ``run`` returned to [0, 1] and to the eps ball
(we do not trust ``run`` to have done it) and re-checks success on the clipped result. It
returns ``AttackResult(raw, clipped, success)``; with a list of K epsilons every field gets a
leading K axis and ``success`` has shape (K, N).

Fixed-epsilon attacks (FGSM, BIM, PGD) run once per epsilon; minimisation attacks (DeepFool)
run once, unbounded, and the result is clipped to each epsilon (``eps=None``: no ball).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal, NamedTuple, final

import torch
from torch import nn

from .._validation import check_images
from ..errors import InputError
from .criteria import Criterion, as_criterion

Distance = Literal["linf", "l2"]
Eps = float | Sequence[float] | None

__all__ = ["Attack", "AttackResult", "clip_to_ball", "distances"]


def to_fast_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory layout when it is an image batch (same values, faster convs)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

class AttackResult(NamedTuple):
    raw: torch.Tensor  # what run() returned: (N, C, H, W), or (K, N, C, H, W) for K epsilons
    clipped: torch.Tensor  # raw clipped to [0, 1] and to the eps ball; same shape as raw
    success: torch.Tensor  # bool (N,) or (K, N): the criterion holds for ``clipped``


def distances(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample L2 and L∞ norms of ``x_adv - x`` (any leading axes; the last three are C, H, W)."""
    delta = (x_adv - x).flatten(-3)
    return {"l2": delta.norm(p=2, dim=-1), "linf": delta.abs().amax(dim=-1)}


def clip_to_ball(x: torch.Tensor, x_adv: torch.Tensor, eps: float | None, distance: Distance) -> torch.Tensor:
    """Project ``x_adv`` onto the ``distance`` ball of radius ``eps`` around ``x``, then into [0, 1].

    Clamping to [0, 1] after the projection only moves coordinates towards ``x`` (which lies in
    [0, 1]), so the result stays inside the ball.
    """
    delta = x_adv - x
    if eps is not None:
        if distance == "linf":
            delta = delta.clamp(-eps, eps)
        else:
            norms = delta.flatten(1).norm(p=2, dim=1)
            # eps / 0 = inf for untouched samples; min(inf, 1) keeps them as they are.
            factor = (eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0.0, 1.0)


def _check_eps(eps: Eps, required: bool) -> tuple[list[float | None], bool]:
    """Return (epsilons, was_sequence); ``None`` is allowed only for minimisation attacks."""
    if eps is None:
        if required:
            raise InputError("this attack needs eps= (a perturbation budget such as 8/255, or a list of them)")
        return [None], False
    if isinstance(eps, torch.Tensor):
        eps = eps.tolist()
    seq = isinstance(eps, (list, tuple))
    values = list(eps) if seq else [eps]
    if seq and not values:
        raise InputError("eps is an empty list; give at least one epsilon")
    for e in values:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e):
            raise InputError(f"eps must be a finite number or a list of them, got {e!r}")
        if e < 0:
            raise InputError(f"eps must be >= 0, got {e}")
    return [float(e) for e in values], seq


def _check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    try:
        shape = torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise InputError(f"mask of shape {tuple(mask.shape)} does not broadcast to the images {tuple(x.shape)}; "
                         "use e.g. (1, C, 1, 1) for a channel mask")
    return mask.to(device=x.device, dtype=x.dtype)


def check_mask_values(mask: object) -> torch.Tensor | None:
    """Validate a 0/1 (or bool) perturbation mask given to an attack's constructor."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"mask must be a torch.Tensor of 0/1 values, got {type(mask).__name__}")
    m = mask.float()
    if m.numel() == 0 or not ((m == 0) | (m == 1)).all():
        raise InputError("mask must hold only 0 (keep) and 1 (may change) values")
    return m


class Attack(ABC):
    """Base class: implement :meth:`run`; call the instance as ``attack(model, x, criterion, eps=...)``.

    Hyperparameters are keyword-only constructor arguments; unknown ones raise ``TypeError``.
    """

    distance: ClassVar[Distance]
    #: False for minimisation attacks, which run once without a budget and are clipped per eps.
    requires_eps: ClassVar[bool] = True
    #: Optional 0/1 tensor broadcastable to the images: 1 where the attack may change the input.
    mask: torch.Tensor | None = None

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        """Return candidate adversarials (N, C, H, W) for ``x``; ``model`` is in eval mode."""

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, criterion: Criterion | torch.Tensor, *,
                 eps: Eps = None) -> AttackResult:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module taking [0, 1] images, got {type(model).__name__}")
        x = check_images(x, "x")
        if x.shape[0] == 0:
            raise InputError("x is an empty batch; give at least one image")
        param = next(model.parameters(), None)
        if param is not None and x.dtype != param.dtype:
            raise InputError(f"x has dtype {x.dtype} but the model's parameters are {param.dtype}; "
                             f"convert with x.to({param.dtype})")
        eps_list, was_seq = _check_eps(eps, self.requires_eps)
        criterion = as_criterion(criterion)
        mask = _check_mask(self.mask, x)
        x = x.detach()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                # One image tells the number of classes; criteria that need the clean logits
                # (top-k) compute them in bind(), the others save a forward pass.
                num_classes = model(x[:1]).shape[-1]
            criterion = criterion.bind(model, x, num_classes)
            raws, clipped, success = [], [], []
            raw = None
            for e in eps_list:
                if raw is None or self.requires_eps:
                    raw = self._checked_run(model, x, criterion, e)
                xc = clip_to_ball(x, raw, e, self.distance)
                if mask is not None:
                    # Belt and braces: whatever run() did, masked-out elements stay bit-identical.
                    xc = torch.where(mask.bool(), xc, x)
                with torch.no_grad():
                    # Channels-last: same logits (to float rounding), about half the CPU time.
                    ok = criterion(xc, model(to_fast_layout(xc)))
                raws.append(raw)
                clipped.append(xc)
                success.append(ok)
        finally:
            model.train(was_training)
        if was_seq:
            return AttackResult(torch.stack(raws), torch.stack(clipped), torch.stack(success))
        return AttackResult(raws[0], clipped[0], success[0])

    def _checked_run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: float | None) -> torch.Tensor:
        raw = self.run(model, x, criterion, eps=eps)
        if not isinstance(raw, torch.Tensor) or raw.shape != x.shape:
            raise RuntimeError(f"{type(self).__name__}.run returned {getattr(raw, 'shape', type(raw))}, "
                               f"expected a tensor of shape {tuple(x.shape)}")
        return raw.detach()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "mask")
        return f"{type(self).__name__}({args})"
