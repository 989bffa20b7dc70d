"""Batched prediction and batched attacks: the two loops every job runs.

Jobs never write their own ``for i in range(0, len(x), batch_size)`` around a model or an
attack; they call :func:`predict` and :func:`attack_in_batches`, so batching, progress bars and
per-batch bookkeeping (HopSkipJump's query counts) live in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..models.batched import predict_logits
from ..progress import progress

__all__ = ["BatchedAttack", "attack_in_batches", "predict"]


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top-1 labels (N,), logits (N, K))`` of ``model`` on ``x``, ``batch_size`` images per forward pass."""
    logits = predict_logits(model, x, batch_size)
    return logits.argmax(1), logits


@dataclass
class BatchedAttack:
    """An attack's results over all batches: ``(raw, clipped, success)`` concatenated, plus per-image extras."""

    raw: torch.Tensor
    clipped: torch.Tensor
    success: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. {"queries": (N,)} for HopSkipJump


def attack_in_batches(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      goal: Callable[[torch.Tensor], Any] | None = None, *, eps: Any = None, batch_size: int = 256,
                      desc: str | None = None, extras: tuple[str, ...] = ()) -> BatchedAttack:
    """Run ``attack(model, x_batch, goal(y_batch), eps=eps)`` over ``x`` in batches.

    ``goal`` turns a batch's labels into the criterion (default: the labels themselves, which the
    attacks read as ``Misclassification``). ``extras`` names per-image attributes the attack
    leaves after each call (e.g. ``"queries_"``), collected under the name without the
    trailing underscore. With a list of budgets the results keep the attack's leading K axis.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) != len(y):
        raise InputError(f"{len(x)} images but {len(y)} labels; pass one label per image")
    raws, clips, oks = [], [], []
    collected: dict[str, list[torch.Tensor]] = {name.rstrip("_"): [] for name in extras}
    for i in progress(range(0, len(x), batch_size), desc=desc, unit="batch"):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        raw, clipped, ok = attack(model, xb, yb if goal is None else goal(yb), eps=eps)
        raws.append(raw)
        clips.append(clipped)
        oks.append(ok)
        for name in extras:
            collected[name.rstrip("_")].append(torch.as_tensor(getattr(attack, name)))
    axis = 1 if isinstance(eps, (list, tuple)) else 0  # a list of budgets adds a leading K axis
    return BatchedAttack(torch.cat(raws, axis), torch.cat(clips, axis), torch.cat(oks, axis),
                         {k: torch.cat(v) for k, v in collected.items()})
