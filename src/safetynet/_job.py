"""The start every job shares: thread count, seeds, output folder."""

from __future__ import annotations

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
