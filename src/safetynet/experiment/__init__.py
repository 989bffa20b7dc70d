"""The paper's type-I experiment (section 2.3, Figures 2-3) and ``safetynet demo``.

``run_experiment(ExperimentConfig(...))`` is the typed entry point; :mod:`.config` holds the
configuration and the attack grid, :mod:`.run` the job, :mod:`.report` the rendering.
"""

from .config import DETECTOR_TITLES, DETECTORS, AttackSetting, ExperimentConfig, attack_grid
from .run import load_splits, run_experiment

__all__ = ["DETECTORS", "DETECTOR_TITLES", "AttackSetting", "ExperimentConfig", "attack_grid", "load_splits",
           "run_experiment"]
