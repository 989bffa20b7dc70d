"""The Square attack under L∞: score-based random search with square-shaped updates, query counted."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_positive
from ..errors import InputError
from ._gradient import check_steps, loss_classes
from .base import Attack, check_mask_values
from .criteria import Criterion
from .joint_pgd import _check_seed, classifier_loss

__all__ = ["Square", "p_schedule"]

#: Iterations (out of 10,000 queries) after which the paper halves p: its Sec. 4 / the authors' code.
_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(it: int, p_init: float, n_queries: int, rescale: bool = True) -> float:
    """The paper's share ``p`` of pixels changed at iteration ``it``: ``p_init`` halved at each of the
    iterations 10, 50, 200, 500, 1k, 2k, 4k, 6k, 8k of a 10k-query budget (rescaled to ``n_queries``)."""
    if rescale:
        it = int(it / n_queries * 10000)
    halvings = sum(it > s for s in _P_STEPS)
    return p_init / 2 ** halvings


class Square(Attack):
    r"""Square (L∞) from 'Square Attack: a query-efficient black-box adversarial attack via random
    search' (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020) [https://arxiv.org/abs/1912.00049].

    Distance Measure : L∞

    A score-based black-box attack: it sees only the classifier's logits (the margin loss
    ``z_y - max_{j != y} z_j``), never a gradient. It starts from vertical stripes of ``+-eps``
    and then, per iteration, proposes to set one random square window of side
    ``s = round(sqrt(p * H * W))`` to ``x +- eps`` (one random sign per channel), keeping the
    proposal when the margin drops; ``p`` follows the paper's schedule (:func:`p_schedule`). An
    image stops as soon as its criterion holds.

    We follow the authors' PyTorch version (AutoAttack's ``square.py``, also torchattacks'
    ``Square``) step by step. With ``shared_squares=True`` one window position and sign is drawn
    per iteration for the whole batch, in the same order from a generator seeded with ``seed``
    as torchattacks draws from its seeded global RNG, so the two give identical results; the
    default draws an independent window and sign per image (the paper's Algorithm 1, as its
    NumPy reference code), so the images of a batch do not all search the same direction.

    Queries are counted per image: the clean check, the striped start, then one per iteration
    while the image is still being attacked; ``queries_`` holds them after a call, and no image
    ever uses more than ``1 + n_queries``.

    Arguments:
        n_queries (int): iterations (queries after the start) per image. (Default: 5000)
        p_init (float): initial share of changed pixels. (Default: 0.8; the paper's ImageNet
            setting is 0.05, AutoAttack uses 0.8 on CIFAR-10)
        rescale_schedule (bool): scale the schedule to ``n_queries``. (Default: True)
        shared_squares (bool): one window per iteration for the batch (torchattacks' draws). (Default: False)
        seed (int or None): seeds every random draw. (Default: 0)
        mask (Tensor or None): 0/1, broadcastable to the images: only elements with 1 change.

    Call:
        ``attack(model, images, labels_or_criterion, eps=8/255)``.

    Examples::
        >>> attack = Square(n_queries=1000, seed=0)
        >>> raw, adv, success = attack(model, images, labels, eps=8 / 255)
        >>> attack.queries_.float().mean()
    """

    distance = "linf"

    def __init__(self, *, n_queries: int = 5000, p_init: float = 0.8, rescale_schedule: bool = True,
                 shared_squares: bool = False, seed: int | None = 0, mask: torch.Tensor | None = None) -> None:
        self.n_queries = check_steps(n_queries, "n_queries")
        self.p_init = check_positive(p_init, "p_init")
        if self.p_init > 1:
            raise InputError(f"p_init is a share of pixels in (0, 1], got {p_init}")
        for name, v in (("rescale_schedule", rescale_schedule), ("shared_squares", shared_squares)):
            if not isinstance(v, bool):
                raise InputError(f"{name} must be True or False, got {v!r}")
        self.rescale_schedule = rescale_schedule
        self.shared_squares = shared_squares
        self.seed = _check_seed(seed)
        self.mask = check_mask_values(mask)
        self.queries_: torch.Tensor | None = None

    def _sign(self, shape: list[int], gen: torch.Generator | None) -> torch.Tensor:
        # torchattacks' random_choice: sign(2u - 1), drawn in this order so shared mode matches it.
        return torch.sign(2 * torch.rand(shape, generator=gen) - 1)

    def _int(self, high: int, shape: list[int], gen: torch.Generator | None) -> torch.Tensor:
        return (high * torch.rand(shape, generator=gen)).long()  # torchattacks' random_int(0, high)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        from .undetected import criterion_holds

        if eps is None:
            raise InputError("Square needs eps= (an L-inf budget such as 8/255)")
        classes, targeted = loss_classes(criterion, "Square")
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        mask = None if self.mask is None else torch.broadcast_to(self.mask.to(x.dtype), x.shape)
        n, (c, h, w) = len(x), x.shape[1:]
        count = torch.zeros(n, dtype=torch.int64)

        def query(xq: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            count[idx] += 1
            with torch.no_grad():
                logits = model(xq)
            margin = classifier_loss(logits, classes[idx], targeted, "cw", kappa=math.inf)
            return margin, criterion_holds(criterion.subset(idx), xq, logits)

        def restrict(x_new: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            x_new = torch.minimum(torch.maximum(x_new, x[idx] - eps), x[idx] + eps).clamp(0.0, 1.0)
            return x_new if mask is None else torch.where(mask[idx].bool(), x_new, x[idx])

        everyone = torch.arange(n)
        _, done = query(x, everyone)  # already adversarial: nothing to do
        x_best = x.clone()
        todo = (~done).nonzero().squeeze(1)
        stripes = self._sign([n, c, 1, w], gen)  # drawn for all images, as torchattacks does
        x_best[todo] = restrict(x[todo] + eps * stripes[todo], todo)
        loss_best = torch.full((n,), math.inf)
        if todo.numel():
            loss_best[todo], ok = query(x_best[todo], todo)
            done[todo] |= ok
        for it in range(self.n_queries):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            p = p_schedule(it, self.p_init, self.n_queries, self.rescale_schedule)
            s = max(int(round(math.sqrt(p * h * w))), 1)
            s = min(s, h - 1, w - 1) if min(h, w) > 1 else 1
            m = len(idx)
            if self.shared_squares:
                vh, vw = self._int(h - s, [1], gen).expand(m), self._int(w - s, [1], gen).expand(m)
                colour = self._sign([c, 1, 1], gen).expand(m, c, 1, 1)
            else:
                vh, vw = self._int(h - s, [m], gen), self._int(w - s, [m], gen)
                colour = self._sign([m, c, 1, 1], gen)
            rows = torch.arange(h)[None, :, None]
            cols = torch.arange(w)[None, None, :]
            window = ((rows >= vh[:, None, None]) & (rows < (vh + s)[:, None, None])
                      & (cols >= vw[:, None, None]) & (cols < (vw + s)[:, None, None]))  # (m, H, W)
            deltas = 2.0 * eps * colour * window[:, None].to(x.dtype)  # (m, C, H, W)
            x_new = restrict(x_best[idx] + deltas, idx)
            loss, ok = query(x_new, idx)
            improved = (loss < loss_best[idx]) | ok
            loss_best[idx] = torch.where(loss < loss_best[idx], loss, loss_best[idx])
            x_best[idx[improved]] = x_new[improved]
            done[idx] |= ok
        self.queries_ = count
        return x_best

    def __repr__(self) -> str:
        return (f"Square(n_queries={self.n_queries}, p_init={self.p_init}, shared_squares={self.shared_squares}, "
                f"seed={self.seed})")
