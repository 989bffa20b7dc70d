"""PGD under L∞: projected gradient descent from a random start."""

from __future__ import annotations

import torch

from ._gradient import IterativeGradientAttack


class PGD(IterativeGradientAttack):
    r"""PGD from 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018) [https://arxiv.org/abs/1706.06083].

    Distance Measure : L∞

    Starts at a uniformly random point of the eps ball, then takes ``steps`` signed-gradient
    steps, projecting back onto the ball and [0, 1] after each.

    Arguments:
        steps (int): number of iterations. (Default: 10)
        step_size (float or None): per-step change in [0, 1] pixel units. (Default: None,
            ``2.5 * eps / steps``)
        random_start (bool): start at a random point of the ball. (Default: True)
        seed (int or None): seed of the random start; None draws from torch's global RNG.
            (Default: None)
        mask (Tensor or None): 0/1 tensor broadcastable to the images; 1 where the input may
            change. (Default: None, every element)

    Call:
        ``attack(model, images, labels_or_criterion, eps=8/255)`` with images (N, C, H, W) in
        [0, 1]; returns ``AttackResult(raw, clipped, success)``.

    Examples::
        >>> attack = PGD(steps=10, step_size=2 / 255, seed=0)
        >>> raw, adv, success = attack(model, images, labels, eps=8 / 255)
    """

    distance = "linf"

    def __init__(self, *, steps: int = 10, step_size: float | None = None, random_start: bool = True,
                 seed: int | None = None, mask: torch.Tensor | None = None) -> None:
        super().__init__(steps=steps, step_size=step_size, random_start=random_start, mask=mask, seed=seed)
