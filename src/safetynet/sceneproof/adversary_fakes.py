"""Fakes a real adversary would make, for the leave-one-source-out evaluation (:mod:`safetynet.sceneproof.loso`).

Same contract as :mod:`safetynet.sceneproof.fakes`: a real batch in, a new ``(image, depth,
valid)`` out, deterministic per seed. ``screen_photo``: a photo of a screen or print, depth a
slightly tilted plane at arm's length with sensor-like noise and holes; ``flat_print``: the same
plane without noise or holes; ``luminance_depth``: depth made from the image's brightness. Not
part of the CNN's training set.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .rgbd_batch import Batch, check_rgbd_batch, seeded_generator as _gen

__all__ = ["PLANE_FOCAL", "flat_print", "luminance", "luminance_depth", "plane_depth", "screen_photo"]

#: Focal length assumed for planes, as a share of the frame width (a ~58 degree horizontal field
#: of view, like Kinect v1 and most RealSense colour cameras).
PLANE_FOCAL = 0.9


def plane_depth(height: int, width: int, distance: float, tilt_x: float, tilt_y: float,
                focal: float = PLANE_FOCAL) -> torch.Tensor:
    """Depth (H, W) in metres of a plane seen by a pinhole camera with focal length ``focal * width``.

    The plane passes through the optical axis at ``distance`` and its normal is tilted by
    ``tilt_x``/``tilt_y`` radians about the vertical/horizontal axis. Inverse depth of a plane is an
    affine function of the pixel coordinates: ``1/z = (n_x u + n_y v + n_z) / (n_z D)`` with
    ``u = (x - c_x) / f``.
    """
    f = focal * width
    x = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2) / f
    y = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2) / f
    nx, ny = np.sin(tilt_x), np.sin(tilt_y)
    nz = np.sqrt(max(1e-6, 1.0 - nx * nx - ny * ny))
    inv = (nx * x[None, :] + ny * y[:, None] + nz) / (nz * distance)
    return (1.0 / inv.clamp_min(1e-3)).float()


def _sensor_noise(depth: torch.Tensor, g: torch.Generator, hole_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinect-like axial noise (sigma grows with depth squared), millimetre quantisation and holes:
    a missing band at one side (the projector-camera baseline) plus blobs of dropped readings."""
    H, W = depth.shape
    sigma = 0.0012 + 0.0019 * (depth - 0.4).clamp_min(0) ** 2
    # Low-frequency wobble (stereo matching / IR pattern) plus per-pixel noise.
    coarse = torch.randn((1, 1, max(1, H // 8), max(1, W // 8)), generator=g)
    wobble = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    noisy = depth + sigma * (torch.randn((H, W), generator=g) + 0.5 * wobble)
    noisy = torch.round(noisy * 1000) / 1000
    valid = torch.ones((H, W), dtype=torch.bool)
    band = int(torch.randint(0, max(1, W // 16) + 1, (1,), generator=g))
    if band:
        if float(torch.rand(1, generator=g)) < 0.5:
            valid[:, :band] = False
        else:
            valid[:, W - band:] = False
    # Blobs: threshold smoothed noise so that about hole_share of the pixels drop out.
    blob = F.interpolate(torch.randn((1, 1, max(1, H // 6), max(1, W // 6)), generator=g), size=(H, W),
                         mode="bilinear", align_corners=False)[0, 0]
    valid &= blob < torch.quantile(blob.flatten(), 1.0 - hole_share)
    valid &= torch.rand((H, W), generator=g) > 0.01
    return noisy.clamp_min(0) * valid, valid


def screen_photo(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                 noise: bool = True, distance: tuple[float, float] = (0.3, 1.2), max_tilt: float = 15.0,
                 hole_share: tuple[float, float] = (0.0, 0.15)) -> Batch:
    """A photo of a screen or a print: the image is kept, the depth is one plane.

    Distance is drawn from ``distance`` (metres: a screen or print held or shown at arm's length),
    the tilt of the plane up to ``max_tilt`` degrees about each axis. With ``noise`` the plane
    gets depth-dependent sensor noise, millimetre steps and holes (a band at one side plus blobs
    covering a share drawn from ``hole_share``), as a real depth camera filming a screen would;
    without it every pixel is valid and the plane is exact.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    lo, hi = distance
    if not 0 < lo <= hi:
        raise InputError(f"distance must be (low, high) metres with 0 < low <= high, got {distance}")
    if not 0 <= max_tilt < 60:
        raise InputError(f"max_tilt must be in [0, 60) degrees, got {max_tilt}")
    if not 0 <= hole_share[0] <= hole_share[1] < 1:
        raise InputError(f"hole_share must be (low, high) with 0 <= low <= high < 1, got {hole_share}")
    B, _, H, W = image.shape
    g = _gen(seed)
    deps, vals = [], []
    for _ in range(B):
        u = torch.rand(4, generator=g)
        dist = lo + (hi - lo) * float(u[0])
        tx, ty = (np.deg2rad(max_tilt) * (2 * float(u[k]) - 1) for k in (1, 2))
        d = plane_depth(H, W, dist, tx, ty)
        if noise:
            d, v = _sensor_noise(d, g, hole_share[0] + (hole_share[1] - hole_share[0]) * float(u[3]))
        else:
            v = torch.ones((H, W), dtype=torch.bool)
        deps.append(d[None])
        vals.append(v[None])
    return image.clone(), torch.stack(deps), torch.stack(vals)


def flat_print(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0, **options) -> Batch:
    """:func:`screen_photo` without sensor noise or holes: an exact plane, every pixel valid."""
    return screen_photo(image, depth, valid, seed=seed, noise=False, **options)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma (B,1,H,W) of images (B,3,H,W) in [0, 1]."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def luminance_depth(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                    keep_holes: bool = True) -> Batch:
    """Depth made from brightness: an affine map of the luma onto the real map's 5-95 % depth range.

    Per frame, brighter is nearer or farther (drawn at random), so the sign of the correlation
    gives nothing away; ``keep_holes`` copies the real validity mask (frames without valid depth
    use 0.5-4 m and every pixel). Depth is quantised to millimetres like a 16-bit PNG.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    B = image.shape[0]
    g = _gen(seed)
    lum = luminance(image)
    flip = torch.rand(B, generator=g) < 0.5
    deps, vals = [], []
    for i in range(B):
        v = valid[i]
        if bool(v.any()) and keep_holes:
            q = torch.quantile(depth[i][v].double(), torch.tensor([0.05, 0.95], dtype=torch.float64)).float()
            near, far = float(q[0]), max(float(q[1]), float(q[0]) + 0.05)
        else:
            near, far, v = 0.5, 4.0, torch.ones_like(v)
        t = (1 - lum[i]) if bool(flip[i]) else lum[i]
        d = torch.round((near + (far - near) * t) * 1000) / 1000
        deps.append(d * v)
        vals.append(v.clone())
    return image.clone(), torch.stack(deps), torch.stack(vals)
