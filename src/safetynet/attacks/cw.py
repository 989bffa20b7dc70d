"""Carlini & Wagner's L2 attack: the smallest L2 perturbation found by Adam in tanh space, c by binary search."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from ._gradient import check_steps, loss_classes
from .base import Attack, check_mask_values
from .criteria import Criterion
from .joint_pgd import classifier_loss

__all__ = ["CWL2"]

# The reference maps images to tanh space with arctanh((2x - 1) * 0.999999), so pixels at exactly
# 0 or 1 get a finite w (torchattacks clamps to +-1 and gets an infinite w, which can never move).
_TANH_SCALE = 0.999999


class CWL2(Attack):
    r"""CW-L2 from 'Towards Evaluating the Robustness of Neural Networks'
    (Carlini & Wagner, IEEE S&P 2017) [https://arxiv.org/abs/1608.04644]; we follow the authors'
    ``l2_attack.py`` (github.com/carlini/nn_robust_attacks).

    Distance Measure : L2 (a minimisation attack: it runs once without a budget and
    :class:`~safetynet.attacks.base.Attack` clips the result to each eps)

    Per image, minimise ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` over
    ``x' = (tanh(w) + 1) / 2`` (always a valid image) with Adam; the constant ``c`` is found by a
    per-image binary search (``binary_search_steps`` rounds starting at ``initial_c``: halve the
    interval after a success, multiply by 10 while no success has been seen). Each round runs up
    to ``steps`` Adam iterations and aborts early when the total loss has not dropped by 0.01 %
    over a tenth of the steps (the reference's ``ABORT_EARLY``). The result is, per image, the
    smallest-L2 iterate on which the criterion held; images never fooled are returned unchanged.

    Arguments:
        steps (int): Adam iterations per binary-search round. (Default: 1000; reference 10000)
        binary_search_steps (int): rounds of the search over c. (Default: 9)
        initial_c (float): c of the first round. (Default: 1e-3)
        lr (float): Adam learning rate. (Default: 0.01)
        kappa (float): confidence margin of the loss. (Default: 0.0)
        abort_early (bool): stop a round when the loss stalls. (Default: True)
        mask (Tensor or None): 0/1, broadcastable to the images: only elements with 1 change.

    Call:
        ``attack(model, images, labels_or_criterion, eps=None or [...])``. Success is judged by the
        criterion, so ``Misclassification(y) & Undetected(detector)`` keeps only accepted iterates.

    Examples::
        >>> raw, adv, success = CWL2(steps=100, binary_search_steps=5)(model, images, labels)
        >>> distances(images, adv)["l2"].median()
    """

    distance = "l2"
    requires_eps = False

    def __init__(self, *, steps: int = 1000, binary_search_steps: int = 9, initial_c: float = 1e-3, lr: float = 0.01,
                 kappa: float = 0.0, abort_early: bool = True, mask: torch.Tensor | None = None) -> None:
        self.steps = check_steps(steps)
        self.binary_search_steps = check_steps(binary_search_steps, "binary_search_steps")
        self.initial_c = check_positive(initial_c, "initial_c")
        self.lr = check_positive(lr, "lr")
        self.kappa = check_positive(kappa, "kappa", allow_zero=True)
        if not isinstance(abort_early, bool):
            raise InputError(f"abort_early must be True or False, got {abort_early!r}")
        self.abort_early = abort_early
        self.mask = check_mask_values(mask)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        from .undetected import criterion_holds

        classes, targeted = loss_classes(criterion, "CWL2")
        n = len(x)
        mask = None if self.mask is None else self.mask.to(device=x.device, dtype=x.dtype)
        w0 = torch.atanh((2 * x - 1) * _TANH_SCALE)
        lower = torch.zeros(n, dtype=torch.float64)
        upper = torch.full((n,), 1e10, dtype=torch.float64)
        c = torch.full((n,), self.initial_c, dtype=torch.float64)
        best_l2 = torch.full((n,), math.inf, dtype=torch.float64)
        best = x.clone()
        for _ in range(self.binary_search_steps):
            # Each round restarts from the clean image (the reference's modifier = 0).
            delta_w = torch.zeros_like(x, requires_grad=True)
            opt = torch.optim.Adam([delta_w], lr=self.lr)
            round_ok = torch.zeros(n, dtype=torch.bool)
            prev = math.inf
            cx = c.to(x.dtype)
            for it in range(self.steps):
                dw = delta_w if mask is None else delta_w * mask
                xa = (torch.tanh(w0 + dw) + 1) / 2
                logits = model(xa)
                l2sq = (xa - x).flatten(1).pow(2).sum(1)
                margin = classifier_loss(logits, classes, targeted, "cw", self.kappa)
                loss = (l2sq + cx * margin).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                # Judge the iterate the loss was computed on (as the reference does).
                with torch.no_grad():
                    ok = criterion_holds(criterion, xa.detach(), logits.detach())
                    if self.kappa > 0:
                        ok &= margin.detach() <= -self.kappa
                    round_ok |= ok
                    l2 = l2sq.detach().double().sqrt()
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best[better] = xa.detach()[better]
                if self.abort_early and it % max(self.steps // 10, 1) == 0:
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            # Binary search on c, per image (the reference's update).
            upper = torch.where(round_ok, torch.minimum(upper, c), upper)
            lower = torch.where(round_ok, lower, torch.maximum(lower, c))
            searched = upper < 1e9
            c = torch.where(searched, (lower + upper) / 2, c * 10)
        return best
