"""Basic iterative method under L2 ("Iterative-L2" in the SafetyNet paper)."""

from __future__ import annotations

import torch

from ._gradient import IterativeGradientAttack


class BIML2(IterativeGradientAttack):
    r"""Iterative L2 gradient attack: the L2 form of BIM (Kurakin, Goodfellow, Bengio, ICLR workshop
    2017) [https://arxiv.org/abs/1607.02533], as used by Metzen et al. 2017
    [https://arxiv.org/abs/1702.04267] and the SafetyNet paper.

    Distance Measure : L2

    ``x_{n+1} = Clip_{x, eps}(x_n + step_size * ∇CE / ||∇CE||_2)`` starting at the clean image.

    Arguments:
        steps (int): number of iterations. (Default: 10)
        step_size (float or None): L2 length of each step. (Default: None, ``1.25 * eps / steps``
            so the walk can cover the ball as BIM's rule does under L∞)
        mask (Tensor or None): 0/1 tensor broadcastable to the images; 1 where the input may
            change. (Default: None, every element)

    Call:
        ``attack(model, images, labels_or_criterion, eps=0.5)`` with images (N, C, H, W) in
        [0, 1]; returns ``AttackResult(raw, clipped, success)``.

    Examples::
        >>> attack = BIML2(steps=10)
        >>> raw, adv, success = attack(model, images, labels, eps=0.5)
    """

    distance = "l2"

    def __init__(self, *, steps: int = 10, step_size: float | None = None,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__(steps=steps, step_size=step_size, random_start=False, mask=mask, seed=None)

    def default_step_size(self, eps: float, steps: int) -> float:
        return 1.25 * eps / steps
