"""A detector surrogate shifted by calibrated thresholds, so that it fires (> 0) where the deployed detector does."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .detector_scores import DetectorScore

__all__ = ["ShiftedScore"]


class ShiftedScore(DetectorScore):
    """``inner``'s per-layer scores minus ``thresholds`` (one per layer, or one for all).

    A detector deployed at a calibrated threshold ``t`` rejects where ``score > t``; an adaptive
    attack must push the smoothed score below the same ``t``, not below 0.
    """

    def __init__(self, inner: DetectorScore, thresholds: Sequence[float]) -> None:
        self.inner = inner
        self.model = inner.model
        self.rule = getattr(inner, "rule", "any")
        self.shift = torch.tensor([float(t) for t in thresholds], dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, scores = self.inner(x)
        if scores.ndim == 1:
            scores = scores[:, None]
        return logits, scores - self.shift.to(scores)

    def __repr__(self) -> str:
        return f"ShiftedScore({self.inner!r})"
