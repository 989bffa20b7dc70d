"""The configuration of ``safetynet sceneproof evaluate``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..cli_config import setting
from ..errors import InputError

__all__ = ["EvaluateConfig"]


@dataclass
class EvaluateConfig:
    model: str | None = setting(None, "SceneProof bundle folder (default: the shipped one)")
    out: str = setting("sceneproof-eval", "output folder for report.md, results.json and figures/")
    data_dir: str | None = setting(None, "folder holding rgbd/ and rgbd-heldout/ (default $SAFETYNET_DATA or "
                                         "../shared/data)")
    n_attack: int = setting(200, "validation patches attacked (half real, half fake)")
    eps: float | None = setting(None, "L-inf budget on the depth channel (default: the detectors' training budget)")
    n_fit: int = setting(600, "other validation patches: the attacker's own surrogate detectors are fitted on them")
    steps: int = setting(20, "iterations of every white-box attack (type-I BIM and type II), as in the engine's rows")
    sharpness: float = setting(10.0, "type-II sigmoid sharpness (lambda)")
    gamma_scale: float = setting(0.1, "type-II RBF widening (gamma multiplier)")
    seed: int = setting(0, "seeds the attacked patches and the attacks")
    heldout: bool = setting(True, "also judge the rgbd-heldout/ captures")

    def validate(self) -> None:
        """Refuse settings that cannot run, before anything is read or written."""
        for name in ("n_attack", "n_fit", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("sharpness", "gamma_scale") + (("eps",) if self.eps is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{name} must be a positive finite number, got {v!r}")
