"""A batch of RGB-D frames as the fake generators take it: validation and seeded randomness."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .._validation import check_images
from ..errors import InputError

__all__ = ["Batch", "DepthPredictor", "check_rgbd_batch", "seeded_generator"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
DepthPredictor = Callable[[torch.Tensor], torch.Tensor]


def check_rgbd_batch(image: object, depth: object, valid: object, min_batch: int = 1) -> Batch:
    """Validate a real batch; raises :class:`InputError` naming the problem and the fix."""
    image = check_images(image, "image", channels=3)
    B, _, H, W = image.shape
    if not isinstance(depth, torch.Tensor) or not depth.is_floating_point():
        raise InputError(f"depth must be a float torch.Tensor (B,1,H,W) in metres, got {type(depth).__name__}"
                         f"{'' if not isinstance(depth, torch.Tensor) else ' ' + str(depth.dtype)}")
    if tuple(depth.shape) != (B, 1, H, W):
        raise InputError(f"depth must have shape {(B, 1, H, W)} to match the image, got {tuple(depth.shape)}")
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or tuple(valid.shape) != (B, 1, H, W):
        got = f"{tuple(valid.shape)} {valid.dtype}" if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise InputError(f"valid must be a bool tensor of shape {(B, 1, H, W)}, got {got}")
    if depth.numel() and not torch.isfinite(depth).all():
        raise InputError("depth contains NaN or Inf; mark missing readings with depth 0 and valid False")
    if depth.numel() and depth.min() < 0:
        raise InputError(f"depth must be >= 0 metres, got minimum {depth.min().item():.4g}")
    if bool((depth[~valid] != 0).any()):
        raise InputError("depth must be 0 wherever valid is False; use depth * valid")
    if B < min_batch:
        raise InputError(f"this fake needs a batch of at least {min_batch} frames (it mixes frames), got {B}")
    return image, depth, valid


def seeded_generator(seed: int) -> torch.Generator:
    """A torch generator seeded with ``seed`` (an integer; refused otherwise)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))
