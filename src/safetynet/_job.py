"""What every job shares: its output folder and phase timings.

Job entry points neither set torch's thread count nor seed the global generators (``train``
alone seeds torch, for its initial weights): the ``safetynet`` command does both once, before it
calls a job (:func:`safetynet.cli.set_global_state`); a library caller seeds torch and numpy
itself if a run must repeat bit for bit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path


def prepare_output(out: str | Path) -> Path:
    """Create the output folder ``out`` (and its parents); returns it as a Path."""
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
