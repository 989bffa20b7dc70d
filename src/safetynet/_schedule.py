"""The one-cycle learning-rate schedule, safe for short runs.

``torch.optim.lr_scheduler.OneCycleLR`` divides by the length of its warm-up phase,
``pct_start * total_steps - 1``, so a run of a few steps (a tiny data set, one epoch) dies with
``ZeroDivisionError`` when that is 0. :func:`one_cycle` keeps both phases at least two steps long
and, below four steps, holds the rate constant. Long runs get exactly torch's schedule.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["one_cycle", "optimizer_step"]


def one_cycle(opt: torch.optim.Optimizer, *, max_lr: float, total_steps: int, pct_start: float = 0.25,
              **kwargs: Any) -> torch.optim.lr_scheduler.LRScheduler:
    """``OneCycleLR(opt, max_lr, total_steps, pct_start, **kwargs)`` that works for any ``total_steps >= 1``."""
    total = max(int(total_steps), 1)
    if total < 4:
        for group in opt.param_groups:
            group["lr"] = max_lr
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    pct = min(max(float(pct_start), 2.0 / total), 1.0 - 2.0 / total)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct, **kwargs)


def optimizer_step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> float:
    """One step of ``opt`` on ``loss`` and one of its schedule; returns the loss as a float."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())
