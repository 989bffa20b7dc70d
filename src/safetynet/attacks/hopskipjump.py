"""HopSkipJump: a hard-label, query-counted black-box attack on the defended system's final answer.

Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020 [https://arxiv.org/abs/1904.02144]; we follow the authors' reference
implementation (github.com/Jianbo-Lab/HSJA) step by step.

Distance Measure : L2 or L∞ (``distance=``; a minimisation attack: it runs once, unbounded,
and :class:`~safetynet.attacks.base.Attack` clips the result to each eps)

The attacker sees only the criterion's verdict on each query, e.g. for
``Misclassification(y) & Undetected(net)`` whether SafetyNet's output (a label, or "rejected"
as an extra label) is a wrong class that got through. No gradient, no score, no smoothing: the
quantizer cannot mask anything here, which is why a black-box attack beating the white-box ones
is a warning sign for the white-box evaluation (:mod:`safetynet.evaluation.flags`).

Per image: find any adversarial start (another image of the batch, then uniform noise),
binary-search towards the original, then repeat: estimate the boundary normal from
``B_t = init_evals * sqrt(t)`` random probes, take a geometric step along it, binary-search back
to the boundary. Images are processed together; each has its own query count, and no image is
ever queried beyond ``max_queries`` (``attack.queries_`` holds the counts of the last call).

Example::

    >>> attack = HopSkipJump(max_queries=2000, seed=0)
    >>> raw, adv, success = attack(net.model, x, Misclassification(y) & Undetected(net), eps=[0.5, 1.0])
    >>> attack.queries_          # (N,) queries used per image
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_images, check_positive
from ..errors import InputError
from ._gradient import check_steps
from .base import Attack, check_mask_values
from .criteria import Criterion
from .joint_pgd import _check_choice, _check_seed
from .undetected import criterion_holds

__all__ = ["HopSkipJump"]


class HopSkipJump(Attack):
    r"""HopSkipJump (Chen et al., S&P 2020), hard-label and query-counted.

    Distance Measure : L2 or L∞

    Arguments:
        distance (str): "l2" or "linf". (Default: "l2")
        max_queries (int): query budget per image (initialisation included). (Default: 5000)
        steps (int): maximum gradient-estimation iterations. (Default: 64)
        init_evals (int): probes at the first iteration, growing as sqrt(t). (Default: 100)
        max_evals (int): cap on probes per iteration. (Default: 10000)
        gamma (float): binary-search tolerance parameter, theta = gamma / (d sqrt(d)) for L2 and
            gamma / d^2 for L∞. (Default: 1.0)
        starting_points (Tensor or None): candidate adversarial starts (P, C, H, W); None tries
            the other images of the batch, then uniform noise. (Default: None)
        init_tries (int): start candidates tried per image. (Default: 100)
        seed (int or None): seeds every random draw. (Default: None)
        batch_size (int): images per model call. (Default: 1024)
        mask (Tensor or None): 0/1, broadcastable to one image or the batch: only elements with
            1 change (e.g. the depth channel of RGB-D input). (Default: None)

    After a call ``queries_`` (int64 (N,)) holds each image's number of queries.

    Call:
        ``attack(model, images, criterion, eps=None or [...])``.

    Examples::
        >>> raw, adv, ok = HopSkipJump(max_queries=1000, seed=0)(model, x, Misclassification(y), eps=1.0)
    """

    requires_eps = False

    def __init__(self, *, distance: str = "l2", max_queries: int = 5000, steps: int = 64, init_evals: int = 100,
                 max_evals: int = 10000, gamma: float = 1.0, starting_points: torch.Tensor | None = None,
                 init_tries: int = 100, seed: int | None = None, batch_size: int = 1024,
                 mask: torch.Tensor | None = None) -> None:
        self.distance = _check_choice(distance, "distance", ("l2", "linf"))  # type: ignore[misc]
        self.max_queries = check_steps(max_queries, "max_queries")
        self.steps = check_steps(steps)
        self.init_evals = check_steps(init_evals, "init_evals")
        self.max_evals = check_steps(max_evals, "max_evals")
        self.gamma = check_positive(gamma, "gamma")
        self.starting_points = None if starting_points is None else check_images(starting_points, "starting_points")
        self.init_tries = check_steps(init_tries, "init_tries")
        self.seed = _check_seed(seed)
        self.batch_size = check_steps(batch_size, "batch_size")
        self.mask = check_mask_values(mask)
        self.queries_: torch.Tensor | None = None

    # -- the oracle -----------------------------------------------------------------------------
    def _query(self, model: nn.Module, criterion: Criterion, xq: torch.Tensor, owner: torch.Tensor,
               count: torch.Tensor) -> torch.Tensor:
        """The criterion's verdict on ``xq`` (m images; ``owner[k]`` = image it belongs to); counts queries."""
        if owner.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=xq.device)
        count += torch.bincount(owner, minlength=len(count))
        out = []
        with torch.no_grad():
            for i in range(0, len(xq), self.batch_size):
                xb = xq[i:i + self.batch_size]
                out.append(criterion_holds(criterion.subset(owner[i:i + self.batch_size]), xb, model(xb)))
        return torch.cat(out)

    def _dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = (x - y).flatten(1)
        return d.norm(dim=1) if self.distance == "l2" else d.abs().amax(1)

    def _blend(self, x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The reference ``project``: L2 moves along the segment, L∞ clips into a box of radius alpha."""
        a = alpha.view(-1, 1, 1, 1).to(x.dtype)
        if self.distance == "l2":
            # x + a (x_adv - x), not (1 - a) x + a x_adv: pixels where x_adv == x stay bit-identical.
            return x + a * (x_adv - x)
        return torch.minimum(torch.maximum(x_adv, x - a), x + a)

    def _binary_search(self, model, criterion, x, x_adv, idx, theta, count) -> torch.Tensor:
        """Move ``x_adv[idx]`` (adversarial) towards ``x[idx]`` until within theta of the boundary."""
        xo, xa = x[idx], x_adv[idx]
        if self.distance == "linf":
            high = self._dist(xo, xa)
            thr = torch.clamp(high * theta, max=theta)
        else:
            high = torch.ones(len(idx), dtype=torch.float64)
            thr = torch.full((len(idx),), theta, dtype=torch.float64)
        high = high.double()
        low = torch.zeros_like(high)
        while True:
            todo = ((high - low) / thr > 1) & (count[idx] < self.max_queries)
            if not todo.any():
                break
            k = todo.nonzero().squeeze(1)
            mid = (high[k] + low[k]) / 2
            ok = self._query(model, criterion, self._blend(xo[k], xa[k], mid), idx[k], count)
            high[k] = torch.where(ok, mid, high[k])
            low[k] = torch.where(ok, low[k], mid)
        return self._blend(xo, xa, high)  # the adversarial side of every interval

    # -- the attack -----------------------------------------------------------------------------
    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, eps: float | None) -> torch.Tensor:
        n = len(x)
        # With a mask, every probe, start and step lives in the subspace the attack may change,
        # and the reference's step sizes scale with that subspace's dimension.
        mask = None
        if self.mask is not None:
            m = self.mask.to(x.dtype)
            if m.ndim == x.ndim:
                if m.shape[0] != 1:
                    raise InputError("HopSkipJump takes one mask for all images: give it shape (1, C, H, W) or (1, C, 1, 1)")
                m = m[0]
            mask = torch.broadcast_to(m, x.shape[1:]).contiguous()  # __call__ checked that it broadcasts
        d = x[0].numel() if mask is None else max(int(mask.sum()), 1)
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        count = torch.zeros(n, dtype=torch.int64)
        theta = self.gamma / (math.sqrt(d) * d) if self.distance == "l2" else self.gamma / d ** 2
        x_adv = x.clone()
        found = self._query(model, criterion, x, torch.arange(n), count)  # already adversarial: nothing to do
        done = found.clone()

        # 1. initialisation: any adversarial start, then a coarse blend towards x (reference: tol 0.001).
        start = x.clone()
        pool = self.starting_points
        for r in range(self.init_tries):
            need = (~found & (count < self.max_queries)).nonzero().squeeze(1)
            if need.numel() == 0:
                break
            if pool is not None and r < len(pool):
                cand = pool[(need + r) % len(pool)].to(x.dtype)
            elif pool is None and n > 1 and r < n - 1:
                cand = x[(need + r + 1) % n]  # another image of the batch, likely of another class
            else:
                cand = torch.rand(x[need].shape, generator=gen, dtype=x.dtype)
            if mask is not None:
                cand = torch.where(mask.bool(), cand, x[need])
            ok = self._query(model, criterion, cand, need, count)
            start[need[ok]] = cand[ok]
            found[need[ok]] = True
        idx = (found & ~done).nonzero().squeeze(1)
        low = torch.zeros(len(idx), dtype=torch.float64)
        high = torch.ones(len(idx), dtype=torch.float64)
        while True:
            todo = (high - low > 0.001) & (count[idx] < self.max_queries)
            if not todo.any():
                break
            k = todo.nonzero().squeeze(1)
            mid = (high[k] + low[k]) / 2
            a = mid.view(-1, 1, 1, 1).to(x.dtype)
            ok = self._query(model, criterion, x[idx[k]] + a * (start[idx[k]] - x[idx[k]]), idx[k], count)
            high[k] = torch.where(ok, mid, high[k])
            low[k] = torch.where(ok, low[k], mid)
        a = high.view(-1, 1, 1, 1).to(x.dtype)
        x_adv[idx] = x[idx] + a * (start[idx] - x[idx])
        x_adv[idx] = self._binary_search(model, criterion, x, x_adv, idx, theta, count)
        dist_post = torch.zeros(n, dtype=torch.float64)
        dist_post[idx] = self._dist(x[idx], x_adv[idx]).double()

        # 2. iterations: estimate the normal, step along it, return to the boundary.
        for t in range(1, self.steps + 1):
            evals = int(min(self.init_evals * math.sqrt(t), self.max_evals))
            act = (found & ~done & (count + evals <= self.max_queries)).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            if t == 1:
                delta = torch.full((len(act),), 0.1, dtype=torch.float64)
            else:
                factor = math.sqrt(d) if self.distance == "l2" else d
                delta = factor * theta * dist_post[act]
            grad = self._estimate_gradient(model, criterion, x_adv, act, evals, delta, gen, count, mask)
            update = grad.sign() if self.distance == "linf" else grad
            dist = self._dist(x[act], x_adv[act]).double()
            step = dist / math.sqrt(t)
            moved = torch.zeros(len(act), dtype=torch.bool)
            for _ in range(30):  # geometric progression: halve until the step lands adversarial
                k = (~moved & (count[act] < self.max_queries) & (step > 1e-12)).nonzero().squeeze(1)
                if k.numel() == 0:
                    break
                cand = (x_adv[act[k]] + step[k].view(-1, 1, 1, 1).to(x.dtype) * update[k]).clamp(0, 1)
                ok = self._query(model, criterion, cand, act[k], count)
                x_adv[act[k[ok]]] = cand[ok]
                moved[k[ok]] = True
                step[k[~ok]] /= 2
            x_adv[act] = self._binary_search(model, criterion, x, x_adv, act, theta, count)
            dist_post[act] = self._dist(x[act], x_adv[act]).double()
        self.queries_ = count
        return x_adv

    def _estimate_gradient(self, model, criterion, x_adv, act, evals, delta, gen, count, mask=None) -> torch.Tensor:
        """Monte-Carlo boundary normal at ``x_adv[act]`` from ``evals`` probes each (unit norm per image)."""
        shape = x_adv.shape[1:]
        d = x_adv[0].numel()
        # Bound memory: about 2**24 probe pixels per chunk of images.
        per_chunk = max(1, (1 << 24) // max(evals * d, 1))
        grads = []
        for s in range(0, len(act), per_chunk):
            a = act[s:s + per_chunk]
            base = x_adv[a]  # (m, C, H, W)
            if self.distance == "l2":
                rv = torch.randn((len(a), evals, *shape), generator=gen, dtype=x_adv.dtype)
            else:
                rv = torch.rand((len(a), evals, *shape), generator=gen, dtype=x_adv.dtype) * 2 - 1
            if mask is not None:
                rv = rv * mask
            rv = rv / rv.flatten(2).norm(dim=2).clamp_min(1e-12).view(len(a), evals, 1, 1, 1)
            dl = delta[s:s + per_chunk].view(-1, 1, 1, 1, 1).to(x_adv.dtype)
            probes = (base[:, None] + dl * rv).clamp(0, 1)  # (m, B, C, H, W)
            rv = (probes - base[:, None]) / dl
            ok = self._query(model, criterion, probes.flatten(0, 1), a.repeat_interleave(evals), count)
            fval = ok.view(len(a), evals).to(x_adv.dtype) * 2 - 1  # (m, B), +1 = adversarial
            mean = fval.mean(1, keepdim=True)
            # Baseline subtraction (reference): if every probe agrees, follow (or flee) the mean direction.
            weight = torch.where((mean == 1) | (mean == -1), mean.expand_as(fval), fval - mean)
            g = (weight.view(len(a), evals, 1, 1, 1) * rv).mean(1)
            grads.append(g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1))
        return torch.cat(grads)

    def __repr__(self) -> str:
        return (f"HopSkipJump(distance={self.distance!r}, max_queries={self.max_queries}, steps={self.steps}, "
                f"init_evals={self.init_evals}, seed={self.seed})")
