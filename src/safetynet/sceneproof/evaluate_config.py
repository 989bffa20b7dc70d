"""The configuration of ``safetynet sceneproof evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvaluateConfig"]


@dataclass
class EvaluateConfig:
    model: str | None = None  # bundle folder; None: the shipped one
    out: str = "sceneproof-eval"  # folder for report.md, results.json, figures/
    data_dir: str | None = None  # folder holding rgbd/ and rgbd-heldout/; None: $SAFETYNET_DATA or ../shared/data
    n_attack: int = 200  # validation patches attacked (half real, half fake)
    eps: float | None = None  # L-inf budget on the depth channel; None: the detectors' training budget
    n_fit: int = 600  # other validation patches: the attacker's own surrogate detectors are fitted on them
    steps: int = 20  # iterations of every white-box attack (type I BIM and type II), as in the engine's rows
    sharpness: float = 10.0  # type II sigmoid sharpness (lambda)
    gamma_scale: float = 0.1  # type II RBF widening (gamma multiplier)
    seed: int = 0
    heldout: bool = True  # also judge rgbd-heldout/ captures
    threads: int = 1
