"""Robustness of the detectors: type-I / type-II / adaptive / black-box attacks, reliability flags, Table 4.

The typed entry point is :func:`safetynet.robustness.run.run_robustness` (``safetynet robustness``
on the command line)::

    from safetynet.robustness import RobustnessConfig, run_robustness
    results = run_robustness(RobustnessConfig(dataset="digits", n=100, out="runs/robustness-digits"))

Submodules: :mod:`~safetynet.robustness.flags` (AutoAttack-style reliability checks),
:mod:`~safetynet.robustness.surrogates` (transfer-attack surrogates),
:mod:`~safetynet.robustness.report` (``report.md`` in the paper's Table-4 layout).
"""

from __future__ import annotations

from .flags import Flag
from .run import ATTACK_ROWS, RobustnessConfig, run_robustness

__all__ = ["ATTACK_ROWS", "Flag", "RobustnessConfig", "run_robustness"]
