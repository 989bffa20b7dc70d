"""Training and inference loop of SceneProof's patch classifier (:mod:`safetynet.sceneproof.network`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._schedule import one_cycle, optimizer_step
from ..errors import InputError
from .labels import REAL
from .patches import random_hflip
from .sampling import PatchSet


def train_classifier(model: nn.Module, data: PatchSet, *, epochs: int, seed: int, batch_size: int = 64,
                     lr: float = 2e-3, weight_decay: float = 5e-4, optimizer: str = "adamw",
                     log: Callable[[str], None] | None = None,
                     on_epoch: Callable[[int, nn.Module], None] | None = None) -> list[float]:
    """AdamW (or SGD with Nesterov momentum) on a one-cycle schedule, cross-entropy, random horizontal flips.

    Returns the mean training loss per epoch; the model is left in eval mode. ``on_epoch(epoch,
    model)`` is called after every epoch (e.g. to log validation accuracy).
    """
    if len(data) < 2:
        raise InputError("need at least 2 training patches")
    if optimizer not in ("adamw", "sgd"):
        raise InputError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    gen = torch.Generator().manual_seed(int(seed))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = (torch.optim.AdamW(groups, lr=lr) if optimizer == "adamw"
           else torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True))
    steps = epochs * -(-len(data) // batch_size)
    sched = one_cycle(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    history = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            (x,) = random_hflip(gen, data.images(idx))
            total += optimizer_step(opt, sched, nn.functional.cross_entropy(model(x), data.y[idx])) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
        if log is not None:
            log(f"classifier epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch, model)
            model.train()
    model.eval()
    return history


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """P(real) per patch (N,), float32 (eval mode, no gradient)."""
    was = model.training
    model.eval()
    try:
        parts = [torch.softmax(model(x[i:i + batch_size].float()), 1)[:, REAL] for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0)


__all__ = ["predict_proba", "train_classifier"]
