"""Robustness of the detectors: type-I / type-II / adaptive / black-box attacks, reliability flags, Table 4.

The typed entry point is :func:`safetynet.robustness.run.run_robustness` (``safetynet robustness``
on the command line)::

    from safetynet.robustness import RobustnessConfig, run_robustness
    results = run_robustness(RobustnessConfig(dataset="digits", n=100, out="runs/robustness-digits"))

The computing lives in :mod:`safetynet.evaluation` (the engine, the row registry, the flags,
the surrogates); this package holds the job's configuration (:mod:`.config`), the job
(:mod:`.run`) and the rendering of ``report.md`` (:mod:`.report`).
"""

from __future__ import annotations

from .config import RobustnessConfig
from .run import run_robustness

__all__ = ["RobustnessConfig", "run_robustness"]
