"""BIM, the basic iterative method under L∞ ("Iterative-Linf" in the SafetyNet paper)."""

from __future__ import annotations

import torch

from ._gradient import IterativeGradientAttack, kurakin_steps


class BIM(IterativeGradientAttack):
    r"""BIM (iterative FGSM) from 'Adversarial Examples in the Physical World'
    (Kurakin, Goodfellow, Bengio, ICLR workshop 2017) [https://arxiv.org/abs/1607.02533].

    Distance Measure : L∞

    ``x_{n+1} = Clip_{x, eps}(x_n + step_size * sign(∇ CE))`` starting at the clean image.

    Arguments:
        steps (int or None): number of iterations. (Default: None, the paper's
            ``min(eps*255 + 4, 1.25*eps*255)``)
        step_size (float or None): per-step change in [0, 1] pixel units. (Default: None, 1/255
            as in the paper)
        mask (Tensor or None): 0/1 tensor broadcastable to the images; 1 where the input may
            change. (Default: None, every element)

    Call:
        ``attack(model, images, labels_or_criterion, eps=8/255)`` with images (N, C, H, W) in
        [0, 1]; returns ``AttackResult(raw, clipped, success)``.

    Examples::
        >>> attack = BIM(steps=10, step_size=2 / 255)
        >>> raw, adv, success = attack(model, images, labels, eps=8 / 255)
    """

    distance = "linf"

    def __init__(self, *, steps: int | None = None, step_size: float | None = None,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__(steps=steps, step_size=step_size, random_start=False, mask=mask, seed=None)

    def default_steps(self, eps: float) -> int:
        return kurakin_steps(eps)

    def default_step_size(self, eps: float, steps: int) -> float:
        return 1 / 255
