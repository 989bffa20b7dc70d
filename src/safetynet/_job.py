"""The start every job shares: thread count, seeds, output folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch


def start_job(threads: int, seed: int, out: str | Path) -> Path:
    """Set torch's thread count, seed torch and numpy's global generators, create ``out``; returns it."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Laps:
    """Named phase timings of a job: ``t = laps("phase", t)`` logs and records the seconds since ``t``
    and returns a fresh start time; ``laps.times`` goes into the job's results JSON."""

    def __init__(self, logger: logging.Logger) -> None:
        self.times: dict[str, float] = {}
        self._log = logger

    def __call__(self, name: str, t0: float) -> float:
        self.times[name] = round(time.time() - t0, 1)
        self._log.info("%s: %.1f s", name, self.times[name])
        return time.time()
