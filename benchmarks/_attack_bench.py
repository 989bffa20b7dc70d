"""What the attack benchmarks share: timing, the per-method summary and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
            batch_size: int) -> torch.Tensor:
    """``fn`` over ``(x, y)`` in batches, concatenated."""
    return torch.cat([fn(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def attack_summary(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, seconds: float,
                   batch_size: int = 256) -> dict[str, Any]:
    """Speed, success rate (every image) and median L2 (images classified correctly, then fooled)."""
    with torch.no_grad():
        correct = batched(lambda a, b: model(a).argmax(1), x, y, batch_size) == y
        fooled = batched(lambda a, b: model(a).argmax(1), adv, y, batch_size) != y
    l2 = (adv - x).flatten(1).norm(dim=1)
    sel = fooled & correct
    return {"images": len(x), "seconds": round(seconds, 3), "images_per_second": round(len(x) / seconds, 3),
            "success_rate": round(float(fooled.double().mean()), 4),
            "median_l2": round(float(l2[sel].median()), 4) if sel.any() else None,
            "max_linf": round(float((adv - x).abs().amax()), 6)}


def environment(**versions: str) -> dict[str, Any]:
    """Library versions, machine, threads, date and the git commit of the run."""
    return {"torch": torch.__version__, **versions, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, check=False).stdout.strip() or None}
