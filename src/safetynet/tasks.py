"""Task names to :class:`~safetynet.evaluation.task.Task` objects: the one place that knows every task.

Sits above the jobs (``safetynet.robustness`` does not import ``safetynet.sceneproof``); the CLI
and notebook users resolve a ``--dataset`` name here and hand the task to a job::

    from safetynet.tasks import load_task
    task = load_task("sceneproof", n=100, n_fit=1000)
    run_robustness(RobustnessConfig(dataset="sceneproof", out="runs/rob-sp"), task=task)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .errors import InputError
from .evaluation.task import IMAGE_DATASETS, Task, image_task

__all__ = ["TASKS", "load_task"]

TASKS = (*IMAGE_DATASETS, "sceneproof")


def load_task(name: str, model: nn.Module | str | Any | None = None, *, n: int = 100, n_fit: int = 600, seed: int = 0,
              data_dir: str | None = None, out: str | Path | None = None) -> Task:
    """The task ``name``: an image data set (CIFAR-10, its embedded sample, digits) or ``"sceneproof"``.

    ``model``: an ``nn.Module``, a shipped name or a checkpoint folder (image tasks); a SceneProof
    bundle or its folder (``sceneproof``; None: the shipped bundle).
    """
    if name == "sceneproof":
        from .sceneproof.task import sceneproof_task

        return sceneproof_task(model, data_dir=data_dir, n=n, n_fit=n_fit, seed=seed)
    if name in IMAGE_DATASETS:
        return image_task(name, model, n=n, n_fit=n_fit, seed=seed, data_dir=data_dir, out=out)
    raise InputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
