"""SceneProof's classifier factory: a small VGG on 4-channel patches.

The classifier is a small VGG (:class:`~safetynet.models.vgg.CifarVGG`) on 4-channel 64x64
patches: RGB plus the inverse-depth channel of :func:`~safetynet.sceneproof.patches.to_network_input`.
Its two outputs are the classes of :mod:`safetynet.sceneproof.labels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


def model_config(width: int = 16, hidden: int = 128, mean: Sequence[float] = (0.45, 0.42, 0.39, 0.15),
                 std: Sequence[float] = (0.25, 0.25, 0.25, 0.1), blocks: Sequence[int] = (1, 1, 2, 2, 2),
                 dropout: float = 0.0) -> dict[str, Any]:
    """``build_model`` arguments of a SceneProof classifier (stored in the checkpoint's config.json)."""
    return {"arch": "vgg", "num_classes": 2, "in_channels": 4, "width": int(width), "hidden": int(hidden),
            "blocks": [int(b) for b in blocks], "dropout": float(dropout), "pool_size": 1,
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def build_sceneproof_model(config: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """A 4-channel VGG from :func:`model_config`; ``seed`` fixes the initialisation (global RNG restored)."""
    from ..models import build_model

    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(int(seed))
        return build_model(**dict(config))


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of patches (N, 4, H, W) (std floored so normalisation stays finite)."""
    x = x.float()
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]


__all__ = ["build_sceneproof_model", "channel_stats", "model_config"]
