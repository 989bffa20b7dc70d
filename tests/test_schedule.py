"""The one-cycle schedule: torch's own for long runs, no ZeroDivisionError for short ones."""

from __future__ import annotations

import pytest
import torch

from safetynet._schedule import one_cycle


def _lrs(make, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total", [1, 2, 3, 4, 5, 7, 8, 12])
def test_short_runs_work_and_reach_max_lr(total):
    lrs = _lrs(lambda o: one_cycle(o, max_lr=0.2, total_steps=total, pct_start=0.25), total)
    assert len(lrs) == total and all(0 < v <= 0.2 + 1e-12 for v in lrs)
    assert max(lrs) == pytest.approx(0.2)
    if total == 4:  # torch's own OneCycleLR divides by zero here (0.25 * 4 - 1 == 0)
        with pytest.raises(ZeroDivisionError):
            _lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=4, pct_start=0.25), 4)


def test_long_runs_are_exactly_torchs_schedule():
    kw = {"max_lr": 0.2, "total_steps": 391 * 3, "pct_start": 0.25, "div_factor": 10.0, "anneal_strategy": "cos"}
    ours = _lrs(lambda o: one_cycle(o, **kw), 391 * 3)
    ref = _lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, **kw), 391 * 3)
    assert ours == ref
