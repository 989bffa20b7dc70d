"""Depth-only attacks on SceneProof (SafetyNet paper, Lu et al., ICCV 2017, sec. 3 and Figure 4).

"Attackers are only allowed to manipulate the depth": every attack on SceneProof changes only
channel 3 (the encoded depth) of the (N, 4, H, W) patches, through the attacks' ``mask`` (the
attacks library re-applies it to the final output, see :class:`~safetynet.attacks.base.Attack`),
so RGB stays bit-identical. The Table-4 rows (type II, transfer, ...) run on the evaluation
engine with :func:`depth_mask`; this module keeps the mask, the type-I BIM that makes the
detectors' training adversarials, and the bit-exact RGB check.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attacks import BIM, FGSM
from ..errors import InputError
from ..attacks.batched import attack_in_batches

DEPTH_CHANNEL = 3


def depth_mask(channels: int = 4) -> torch.Tensor:
    """(1, C, 1, 1) float mask: 1 on the depth channel (the last one), 0 on RGB."""
    if channels < 1:
        raise InputError(f"channels must be positive, got {channels}")
    m = torch.zeros(1, channels, 1, 1)
    m[:, channels - 1] = 1.0
    return m


def depth_bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
              step_size: float | None = None, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Type I, white-box: BIM-L∞ on the depth channel only. Returns (adversarial patches, success)."""
    attack = BIM(steps=steps, step_size=step_size if step_size is not None else 2.5 * eps / steps, mask=depth_mask())
    res = attack_in_batches(attack, model, x.float(), y, eps=eps, batch_size=batch_size)
    return res.clipped, res.success


def depth_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Type I: one fast-gradient-sign step on the depth channel only."""
    res = attack_in_batches(FGSM(mask=depth_mask()), model, x.float(), y, eps=eps, batch_size=batch_size)
    return res.clipped, res.success


def image_channels_unchanged(x: torch.Tensor, adv: torch.Tensor) -> bool:
    """True when RGB (channels 0-2) of ``adv`` equals ``x`` bit for bit."""
    a = x[:, :DEPTH_CHANNEL].float().numpy().view(np.uint32)
    b = adv[:, :DEPTH_CHANNEL].float().numpy().view(np.uint32)
    return bool(np.array_equal(a, b))


__all__ = ["DEPTH_CHANNEL", "depth_bim", "depth_fgsm", "depth_mask", "image_channels_unchanged"]
