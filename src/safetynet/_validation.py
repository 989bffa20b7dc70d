"""Checks on user-supplied tensors, raising :class:`InputError` with the fix in the message."""

from __future__ import annotations

import torch

from .errors import InputError


def check_images(x: object, name: str = "images", channels: int | None = None) -> torch.Tensor:
    """Validate a float image batch (N, C, H, W) with values in [0, 1] and no NaN/Inf."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor(...)")
    if x.ndim != 4:
        raise InputError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}; add a batch dimension with x[None]")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}; use x.float() / 255")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.numel() and not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or Inf values; clean the input before calling")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError(
            f"{name} must lie in [0, 1], got range [{x.min().item():.4g}, {x.max().item():.4g}]; "
            "rescale (e.g. x / 255) and do not normalise: the model normalises internally"
        )
    return x


def check_labels(y: object, n: int, num_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """Validate int64 labels of shape (N,) in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},) to match the images, got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"{name} must be an integer tensor, got dtype {y.dtype}; use y.long()")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise InputError(f"{name} must lie in [0, {num_classes}), got range [{y.min().item()}, {y.max().item()}]")
    return y.long()


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    import math

    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)
