"""The one batched forward pass: logits of a model over many images, a batch at a time, in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

__all__ = ["predict_logits"]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (N, K) of ``model`` on ``x``, ``batch_size`` images per forward pass.

    The model runs in eval mode (batch-norm statistics, no dropout) and gets its mode back after.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(x) == 0:
        raise InputError("predict_logits needs at least one image")
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
