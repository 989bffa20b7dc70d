"""Shared machinery of the cross-entropy gradient attacks (FGSM, BIM, PGD, L∞ and L2).

Kept private: each public attack lives in its own file and only chooses defaults.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from .base import Attack, Distance, check_mask_values, to_fast_layout
from .criteria import Criterion

# Guards the division in the L2 step for an all-zero gradient (same constant as torchattacks).
_TINY = 1e-10


def check_steps(steps: object, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"{name} must be a positive integer, got {steps!r}")
    return steps


def loss_classes(criterion: Criterion, attack: str) -> tuple[torch.Tensor, bool]:
    found = criterion.loss_classes()
    if found is None:
        raise InputError(f"{attack} needs a criterion that names classes (Misclassification, "
                         "TargetedMisclassification or TopKMisclassification, possibly combined with &)")
    return found


def ascent_gradient(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Gradient of the attacker's objective: CE(labels) untargeted, -CE(targets) targeted.

    Mean cross-entropy, as torchattacks uses: the batch size only rescales the gradient, which
    the sign (L∞) and the normalisation (L2) remove, and matching it keeps results bit-identical.
    """
    # Channels-last halves the cost of a CPU convolution's forward and input-gradient pass here
    # (benchmarks/README.md); gradients agree with the default layout to ~1e-6 relative.
    x = to_fast_layout(x.detach()).requires_grad_(True)
    loss = F.cross_entropy(model(x), classes)
    if targeted:
        loss = -loss
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float, distance: Distance,
         mask: torch.Tensor | None) -> torch.Tensor:
    """One steepest-ascent step of the given size in the ``distance`` geometry."""
    if mask is not None:
        grad = grad * mask
    if distance == "linf":
        return x_adv + step_size * grad.sign()
    norms = grad.flatten(1).norm(p=2, dim=1) + _TINY
    return x_adv + step_size * (grad / norms.view(-1, *([1] * (grad.ndim - 1))))


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, distance: Distance) -> torch.Tensor:
    """Back into the eps ball around ``x`` and into [0, 1]."""
    delta = x_adv - x
    if distance == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(p=2, dim=1)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, distance: Distance, mask: torch.Tensor | None,
                 generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random point of the eps ball around ``x`` (then clipped to [0, 1])."""
    if distance == "linf":
        noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1).to(x.device) * eps
    else:
        # Uniform in the L2 ball: a Gaussian direction and a radius eps * U^(1/d).
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        direction = direction / direction.flatten(1).norm(p=2, dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)
        d = x[0].numel()
        radius = eps * torch.rand(x.shape[0], generator=generator, dtype=x.dtype).pow(1.0 / d).to(x.device)
        noise = direction * radius.view(-1, 1, 1, 1)
    if mask is not None:
        noise = noise * mask
    return (x + noise).clamp(0.0, 1.0)


class IterativeGradientAttack(Attack):
    """Projected steepest ascent on the cross-entropy (the body of BIM and PGD)."""

    def __init__(self, *, steps: int | None, step_size: float | None, random_start: bool,
                 mask: torch.Tensor | None, seed: int | None) -> None:
        self.steps = None if steps is None else check_steps(steps)
        self.step_size = None if step_size is None else check_positive(step_size, "step_size")
        if not isinstance(random_start, bool):
            raise InputError(f"random_start must be True or False, got {random_start!r}")
        self.random_start = random_start
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.mask = check_mask_values(mask)

    def default_steps(self, eps: float) -> int:
        return 10

    def default_step_size(self, eps: float, steps: int) -> float:
        # Madry et al. (2018): a step of 2.5 * eps / steps lets the iterate reach the boundary
        # from anywhere in the ball and still move along it.
        return 2.5 * eps / steps

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        if eps is None:  # __call__ guarantees eps for fixed-budget attacks; this guards direct use
            raise InputError(f"{type(self).__name__} needs eps=")
        classes, targeted = loss_classes(criterion, type(self).__name__)
        steps = self.steps if self.steps is not None else self.default_steps(eps)
        alpha = self.step_size if self.step_size is not None else self.default_step_size(eps, max(steps, 1))
        mask = None if self.mask is None else self.mask.to(device=x.device, dtype=x.dtype)
        x_adv = x.clone()
        if self.random_start:
            gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            x_adv = random_start(x, eps, self.distance, mask, gen)
        for _ in range(steps):
            grad = ascent_gradient(model, x_adv, classes, targeted)
            x_adv = project(x, step(x_adv, grad, alpha, self.distance, mask), eps, self.distance).detach()
        return x_adv


def kurakin_steps(eps: float) -> int:
    """Kurakin et al. (2017): min(eps + 4, 1.25 eps) iterations, eps in 0..255 units (torchattacks' rule)."""
    return max(int(min(eps * 255 + 4, 1.25 * eps * 255)), 1) if eps > 0 else 1


__all__ = ["IterativeGradientAttack", "ascent_gradient", "check_steps", "kurakin_steps", "loss_classes"]
