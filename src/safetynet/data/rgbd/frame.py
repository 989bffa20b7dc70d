"""The RGB-D frame type shared by every reader, the simulator and the fake generators.

Conventions (every producer follows them, every consumer may rely on them):

* ``image``: float32 (3, H, W) in [0, 1];
* ``depth``: float32 (1, H, W), metres along the optical axis (z-depth), exactly 0 where invalid;
* ``valid``: bool (1, H, W), True where the sensor gave a reading; ``depth > 0`` wherever ``valid``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DataError, InputError


@dataclass(frozen=True, eq=False)
class RGBDFrame:
    """One colour image with its aligned depth map.

    ``scene`` names the physical scene (frames of one scene share it, so splits can be made
    by scene rather than by frame); ``intrinsics`` is ``(fx, fy, cx, cy)`` in pixels of this
    frame's resolution when the data set provides it.
    """

    image: torch.Tensor  # (3, H, W) float32 in [0, 1]
    depth: torch.Tensor  # (1, H, W) float32 metres, 0 where invalid
    valid: torch.Tensor  # (1, H, W) bool
    source: str
    scene: str = ""
    intrinsics: tuple[float, float, float, float] | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[1])

    @property
    def width(self) -> int:
        return int(self.image.shape[2])

    def resized(self, size: tuple[int, int]) -> "RGBDFrame":
        """This frame at ``size = (H, W)`` (see :func:`resize_rgbd`)."""
        image, depth, valid = resize_rgbd(self.image[None], self.depth[None], self.valid[None], size)
        intr = None
        if self.intrinsics is not None:
            sy, sx = size[0] / self.height, size[1] / self.width
            fx, fy, cx, cy = self.intrinsics
            # Pixel centres map as (c + 0.5) * s - 0.5.
            intr = (fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)
        return replace(self, image=image[0], depth=depth[0], valid=valid[0], intrinsics=intr)


def resize_rgbd(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize a batch (B,3,H,W), (B,1,H,W), (B,1,H,W) to ``size = (H', W')``.

    The image is resampled bilinearly with antialiasing; depth and validity use nearest
    neighbour, because averaging depth across an object edge or a hole invents surfaces that
    no sensor measured.
    """
    size = (int(size[0]), int(size[1]))
    if size[0] < 1 or size[1] < 1:
        raise InputError(f"size must be two positive integers (H, W), got {size}")
    if tuple(image.shape[-2:]) == size:
        return image, depth, valid
    img = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    dep = F.interpolate(depth, size=size, mode="nearest-exact")
    val = F.interpolate(valid.to(torch.uint8), size=size, mode="nearest-exact").bool()
    return img, dep * val, val


def make_frame(image: np.ndarray, depth: np.ndarray, valid: np.ndarray, source: str, *, scene: str = "",
               intrinsics: tuple[float, float, float, float] | None = None,
               resize_depth_to_image: bool = False) -> RGBDFrame:
    """Check and package decoded arrays: image uint8 (H,W,3), depth float metres (h,w), valid bool (h,w)."""
    if depth.shape != image.shape[:2]:
        ih, iw = image.shape[:2]
        dh, dw = depth.shape
        if not resize_depth_to_image:
            raise DataError(
                f"{source}: image is {iw}x{ih} but depth is {dw}x{dh}; they must be aligned pixel for pixel "
                "(pass resize_depth_to_image=True only for formats that store depth at another resolution)")
        if abs(iw / ih - dw / dh) > 0.02:
            raise DataError(f"{source}: image {iw}x{ih} and depth {dw}x{dh} have different aspect ratios; "
                            "they cannot be the same view, so they are not resized onto each other")
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    dep = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None]
    val = torch.from_numpy(np.ascontiguousarray(valid, dtype=bool))[None]
    if dep.shape[-2:] != img.shape[-2:]:
        size = tuple(img.shape[-2:])
        dep = F.interpolate(dep[None], size=size, mode="nearest-exact")[0]
        val = F.interpolate(val[None].to(torch.uint8), size=size, mode="nearest-exact")[0].bool()
    dep = torch.where(val, dep, torch.zeros((), dtype=dep.dtype))
    return RGBDFrame(image=img, depth=dep, valid=val, source=source, scene=scene, intrinsics=intrinsics)


def stack_frames(frames: Sequence[RGBDFrame]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch frames of one size into (B,3,H,W) image, (B,1,H,W) depth, (B,1,H,W) valid."""
    if not frames:
        raise InputError("no frames to stack")
    sizes = {(f.height, f.width) for f in frames}
    if len(sizes) > 1:
        raise InputError(f"frames have different sizes {sorted(sizes)}; resize them first "
                         "(load_real_frames(..., size=(H, W)) or frame.resized((H, W)))")
    return (torch.stack([f.image for f in frames]), torch.stack([f.depth for f in frames]),
            torch.stack([f.valid for f in frames]))
