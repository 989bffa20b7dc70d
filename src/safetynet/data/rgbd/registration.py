"""Registering a depth map to its colour image by edge alignment (training-data hygiene).

Some public RGB-D captures store depth in the depth camera's frame rather than the colour
camera's: Microsoft 7-Scenes says so itself ("the RGB and depth camera have not been
calibrated"). Measured on the shared copy (120x160 working resolution, 280 training frames),
the red-kitchen depth edges sit about 5 px left of and 2-3 px below the image edges they belong
to, i.e. ~3 % of the frame, which is inside the ``shift_scale_depth`` fake's range (3-12 %).
A SceneProof classifier trained on such pairs learns "edges a little misaligned" as the mark of
a *real* capture and judges properly registered cameras (Open3D, NYU, TUM) fake.

:func:`estimate_registration` finds, for a set of frames from one rig, the similarity
(scale about the centre, then a pixel shift) that best lays depth discontinuities on image
edges, averaged over all the frames; :func:`apply_registration` warps depth and validity with
it (nearest neighbour, never inventing depth values). Apply it to *training* data of a rig
known or measured to be misregistered, never to a pair under test: registering a test pair
would undo exactly the misalignment a fake may consist of.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError

#: Scale factors searched by default: 0.84-1.16 in steps of 0.02.
DEFAULT_SCALES: tuple[float, ...] = tuple(float(x) for x in np.round(np.arange(0.84, 1.161, 0.02), 2))
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)


@dataclass(frozen=True)
class Registration:
    """Depth content scaled by ``scale`` about the frame centre, then shifted by (``dy``, ``dx``)
    in fractions of the frame height and width (resolution-independent). ``score`` and
    ``identity_score`` are the edge agreement with this transform and without one: the mean
    normalised image-edge strength where the depth discontinuities land, minus the same with
    each frame's depth edges laid on another frame's image (chance level, which removes the
    pull of wherever image edges are strong in every frame, e.g. the centre)."""

    scale: float = 1.0
    dy: float = 0.0
    dx: float = 0.0
    score: float = 0.0
    identity_score: float = 0.0
    frames: int = 0

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.dy == 0.0 and self.dx == 0.0

    @property
    def gain(self) -> float:
        """Relative improvement of the edge agreement over leaving the depth where it is."""
        if self.identity_score <= 0:  # no agreement above chance before registration
            return 1.0 if self.score > 0 else 0.0
        return self.score / self.identity_score - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain}


def _check(depth: torch.Tensor, valid: torch.Tensor) -> None:
    if depth.ndim != 4 or depth.shape[1] != 1 or valid.shape != depth.shape or valid.dtype != torch.bool:
        raise InputError(f"depth must be (B, 1, H, W) float and valid a bool tensor of the same shape, got "
                         f"{tuple(depth.shape)} and {tuple(valid.shape)} {valid.dtype}")


def edge_maps(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, jump: float = 0.05,
              ratio: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image edge strength, depth discontinuities), both (B, 1, H, W) float.

    Image edges: Sobel magnitude of the grey image, divided by its per-frame mean so that
    bright, contrasty frames do not dominate. Depth discontinuities: a step to the next pixel
    (horizontally or vertically, both with readings) of more than ``jump`` in log depth (5 % by
    default) and more than ``ratio`` times the steps on either side of it; holes are not edges.
    """
    _check(depth, valid)
    grey = image.float().mean(1, keepdim=True)
    grey = F.pad(grey, (1, 1, 1, 1), mode="replicate")  # zero padding would make the frame border an edge
    gi = (F.conv2d(grey, _SOBEL) ** 2 + F.conv2d(grey, _SOBEL.transpose(2, 3)) ** 2).sqrt()
    gi = gi / gi.flatten(1).mean(1).clamp_min(1e-6).view(-1, 1, 1, 1)
    ld = torch.where(valid, depth.clamp_min(1e-3).log(), torch.zeros_like(depth))
    ed = torch.zeros_like(ld, dtype=torch.bool)
    for dim in (-1, -2):  # along x, then y
        n = ld.shape[dim]
        step = ld.narrow(dim, 1, n - 1) - ld.narrow(dim, 0, n - 1)  # between pixel k and k+1
        ok = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)
        mag = torch.where(ok, step.abs(), torch.zeros_like(step))
        # a discontinuity is a spike in the first difference; a slanted plane (floor, wall seen
        # at a grazing angle) has large but *steady* differences and is not an edge
        pad = F.pad(mag.movedim(dim, -1), (1, 1)).movedim(-1, dim)
        before, after = pad.narrow(dim, 0, n - 1), pad.narrow(dim, 2, n - 1)
        spike = ok & (mag > jump) & (mag > ratio * torch.maximum(before, after))
        ed.narrow(dim, 0, n - 1).logical_or_(spike)
    return gi, ed.float()


def _warp(x: torch.Tensor, scale: float, dy: float, dx: float, mode: str = "nearest") -> torch.Tensor:
    """Warp (nearest neighbour by default): content scaled by ``scale`` about the centre, then moved by
    (dy, dx) pixels; samples from outside the frame are 0."""
    B, _, H, W = x.shape
    theta = torch.tensor([[1.0 / scale, 0.0, -2.0 * dx / W / scale],
                          [0.0, 1.0 / scale, -2.0 * dy / H / scale]], dtype=torch.float32).expand(B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)


def estimate_registration(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *,
                          max_shift: float = 0.1, scales: Sequence[float] = DEFAULT_SCALES,
                          jump: float = 0.05) -> Registration:
    """The similarity that best aligns depth discontinuities with image edges over a batch of frames
    from one camera rig (one transform for all of them).

    Exhaustive over ``scales`` (the default 0.84-1.16 covers a depth camera whose field of view
    differs from the colour camera's, e.g. Kinect v1: IR fx ~ 580 px vs colour ~ 525 px, ratio
    0.9) and over integer pixel shifts up to ``max_shift`` of the frame size. For each scale the
    shift search is one FFT cross-correlation summed over the batch. Every transform is scored
    on the same depth edges (those in the frame's centre, so no shift wraps around); the image
    edges are resampled instead, and the chance level (see :class:`Registration`) subtracted.
    """
    _check(depth, valid)
    if image.ndim != 4 or image.shape[0] != depth.shape[0] or image.shape[-2:] != depth.shape[-2:]:
        raise InputError(f"image must be (B, 3, H, W) matching depth {tuple(depth.shape)}, got {tuple(image.shape)}")
    if not 0 < max_shift < 0.5:
        raise InputError(f"max_shift must be a fraction of the frame in (0, 0.5), got {max_shift}")
    if len(scales) == 0 or any(not 0.5 < float(s) < 2 for s in scales):
        raise InputError(f"scales must be a non-empty list of factors in (0.5, 2), got {list(scales)}")
    B, _, H, W = depth.shape
    if B < 2:
        raise InputError("registration needs at least 2 frames (the score is measured against mismatched frames)")
    ry, rx = max(1, int(round(max_shift * H))), max(1, int(round(max_shift * W)))
    gi, ed = edge_maps(image, depth, valid, jump=jump)
    centre = torch.zeros(1, 1, H, W)
    centre[..., ry:H - ry, rx:W - rx] = 1
    e = ed * centre  # the depth edges scored at every transform: the same set for all of them
    n = float(e.sum())
    if n == 0:
        raise InputError("no depth discontinuities in these frames; registration needs scenes with depth edges")
    e_f = torch.fft.rfft2(e[:, 0].double()).conj()
    other = torch.roll(torch.arange(B), B // 2)  # mismatched frames: the chance level at each transform
    dys = torch.arange(-ry, ry + 1) % H
    dxs = torch.arange(-rx, rx + 1) % W
    best = (-float("inf"), 1.0, 0, 0)
    identity = 0.0
    for s in scales:
        s = float(s)
        # image edges sampled where depth pixel p lands after scaling: g_s(p) = gi(c + s (p - c))
        g_f = torch.fft.rfft2(_warp(gi, 1.0 / s, 0.0, 0.0, mode="bilinear")[:, 0].double())
        # circular cross-correlation c[k] = sum_p g_s(p + k) e(p), summed over frames, minus the
        # same with each frame's depth edges laid on another frame's image edges
        c = torch.fft.irfft2((g_f * e_f).sum(0) - (g_f[other] * e_f).sum(0), s=(H, W))
        corr = c[dys][:, dxs] / n  # (2ry+1, 2rx+1)
        if s == 1.0:
            identity = float(corr[ry, rx])
        i, j = divmod(int(corr.argmax()), corr.shape[1])
        if float(corr[i, j]) > best[0]:
            best = (float(corr[i, j]), s, i - ry, j - rx)
    if identity == 0.0:
        g = gi.double()
        identity = float(((g - g[other]) * e).sum() / n)
    score, s, i, j = best
    # a shift of k pixels in the scaled sampling grid is s * k pixels in the image
    return Registration(scale=s, dy=round(s * i) / H, dx=round(s * j) / W, score=score, identity_score=identity,
                        frames=B)


def apply_registration(depth: torch.Tensor, valid: torch.Tensor, reg: Registration
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp depth and validity by ``reg`` (nearest neighbour; uncovered borders become invalid).

    Depth values are moved, never interpolated or rescaled, so every output reading is one the
    sensor made."""
    _check(depth, valid)
    if reg.is_identity:
        return depth.clone(), valid.clone()
    H, W = depth.shape[-2:]
    dy, dx = reg.dy * H, reg.dx * W
    new_valid = _warp(valid.float(), reg.scale, dy, dx) > 0.5
    new_depth = _warp(depth, reg.scale, dy, dx).to(depth.dtype)
    return new_depth * new_valid, new_valid


def calibrate_registration(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, min_gain: float = 0.1,
                           min_frames: int = 20, **search: Any) -> tuple[Registration, str]:
    """Estimate one rig's registration and say whether it can be trusted: ``(registration, verdict)``.

    ``verdict`` is ``"applied"`` only when the frames are enough (``min_frames``), the transform
    does more than a one-pixel shift (finer corrections are within the noise), the edge
    agreement improves by at least ``min_gain``, the transform is not on the edge of the search
    range, and it is self-consistent (searching again on the registered frames finds nothing
    left to correct: at most one pixel and one scale step). Otherwise the verdict starts with
    ``"skipped:"`` and gives the reason (e.g. a scene whose holes leave too few reliable depth
    edges); the estimate is still returned, for the record, and must not be applied.
    """
    B, _, H, W = depth.shape
    if B < min_frames:
        return Registration(frames=B), f"skipped: {B} frames < {min_frames}"
    reg = estimate_registration(image, depth, valid, **search)
    scales = [float(x) for x in search.get("scales", DEFAULT_SCALES)]
    max_shift = float(search.get("max_shift", 0.1))
    ry, rx = max(1, int(round(max_shift * H))), max(1, int(round(max_shift * W)))
    if reg.is_identity or (reg.scale == 1.0 and abs(round(reg.dy * H)) <= 1 and abs(round(reg.dx * W)) <= 1):
        return reg, "skipped: registered to within a pixel"
    if reg.gain < min_gain:
        return reg, f"skipped: gain {reg.gain:.3f} < {min_gain}"
    if reg.scale in (min(scales), max(scales)) or abs(round(reg.dy * H)) >= ry or abs(round(reg.dx * W)) >= rx:
        return reg, "skipped: estimate at the edge of the search range"
    again = estimate_registration(image, *apply_registration(depth, valid, reg), **search)
    step = min(abs(a - b) for a, b in zip(scales, scales[1:])) if len(scales) > 1 else 0.0
    if abs(again.scale - 1.0) > step + 1e-9 or abs(round(again.dy * H)) > 1 or abs(round(again.dx * W)) > 1:
        return reg, "skipped: not self-consistent"
    return reg, "applied"


__all__ = ["DEFAULT_SCALES", "Registration", "apply_registration", "calibrate_registration", "edge_maps", "estimate_registration"]
