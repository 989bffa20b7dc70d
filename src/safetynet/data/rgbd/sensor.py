"""The simulator's Kinect-like depth sensor model.

The sensor model follows the structured-light Kinect (Khoshelham & Elberink 2012): noise of
constant spread in disparity (so depth noise grows with depth squared), disparity quantised
to 1/8 pixel, no reading beyond the range limits, at grazing angles, on very dark surfaces,
along depth discontinuities and in the projector's shadow beside near objects, plus a little
random dropout. Noise is expressed at the Kinect's native focal length (``sensor_focal``) so
its size in metres does not depend on the render resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SensorModel:
    """Kinect-like depth sensor parameters (defaults: Kinect v1, Khoshelham & Elberink 2012)."""

    baseline: float = 0.075  # m, projector-camera distance
    sensor_focal: float = 580.0  # px at the sensor's native 640x480
    disparity_noise: float = 0.07  # px (native), std of disparity noise: sigma_z ~ 1.6e-3 z^2
    noise_correlation: float = 0.6  # share of the noise that is spatially smooth
    disparity_step: float = 1.0 / 8.0  # px (native), disparity quantisation
    min_range: float = 0.45  # m
    max_range: float = 8.0  # m
    grazing_deg: float = 78.0  # no reading beyond this angle of incidence
    edge_jump: float = 0.04  # relative depth jump between neighbours that counts as a discontinuity
    dropout: float = 0.004  # probability of an isolated missing pixel
    blob_fraction: float = 0.01  # approximate fraction of the image in blob-shaped holes
    dark_albedo: float = 0.05  # IR-absorbing materials darker than this give no reading


def kinect_depth(depth: torch.Tensor, cos_incidence: torch.Tensor, fx: torch.Tensor, generator: torch.Generator,
                 sensor: SensorModel | None = None, dark: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinect-like sensor depth from clean z-depth (B,1,H,W); ``fx`` (B,) is the render focal length.

    Returns (depth with 0 = no reading, valid). See the module docstring for the model.
    """
    sensor = sensor or SensorModel()
    B, _, H, W = depth.shape
    z = depth.clamp_min(1e-3)
    fb = sensor.sensor_focal * sensor.baseline
    disp = fb / z  # native-resolution disparity, px
    white = torch.randn(depth.shape, generator=generator)
    low = torch.randn((B, 1, max(1, H // 4), max(1, W // 4)), generator=generator)
    smooth = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    smooth = smooth / smooth.flatten(1).std(dim=1).clamp_min(1e-6).view(B, 1, 1, 1)
    rho = sensor.noise_correlation
    noise = math.sqrt(1 - rho * rho) * white + rho * smooth
    disp_q = torch.round((disp + sensor.disparity_noise * noise) / sensor.disparity_step) * sensor.disparity_step
    valid = disp_q > 0
    out = fb / disp_q.clamp_min(1e-6)
    valid &= (depth >= sensor.min_range) & (depth <= sensor.max_range)
    valid &= cos_incidence >= math.cos(math.radians(sensor.grazing_deg))
    if dark is not None:
        valid &= ~dark
    # Discontinuities: a relative jump to a 4-neighbour, widened by one pixel (raggedly).
    pad = F.pad(z, (1, 1, 1, 1), mode="replicate")
    jump = torch.zeros_like(z, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[:, :, dy:dy + H, dx:dx + W]
        jump |= (nb - z).abs() > sensor.edge_jump * torch.minimum(nb, z)
    grown = F.max_pool2d(jump.float(), 3, stride=1, padding=1) > 0
    ragged = torch.rand(depth.shape, generator=generator) < 0.5
    valid &= ~(jump | (grown & ragged))
    # Projector shadow: the projector sits `baseline` to the right of the camera, so background
    # just right of a near object's edge receives no pattern. Pixel x is shadowed if some pixel
    # k to its left has a disparity larger by more than k (render-resolution pixels).
    disp_r = fx.view(B, 1, 1, 1) * sensor.baseline / z
    kmax = int(min(48, math.ceil(float(disp_r.max() - disp_r.min()))))
    shadow = torch.zeros_like(valid)
    for k in range(1, kmax + 1):
        left = F.pad(disp_r, (k, 0))[..., :W]
        shadow |= left - k >= disp_r
    valid &= ~shadow
    # Random dropout: isolated pixels and a few blobs.
    valid &= torch.rand(depth.shape, generator=generator) >= sensor.dropout
    if sensor.blob_fraction > 0:
        blobs = torch.rand((B, 1, max(1, H // 8), max(1, W // 8)), generator=generator)
        blobs = F.interpolate(blobs, size=(H, W), mode="bilinear", align_corners=False)
        valid &= blobs < 1 - 4 * sensor.blob_fraction  # the upsampled maximum regions stay small
    return torch.where(valid, out, torch.zeros_like(out)), valid


__all__ = ["SensorModel", "kinect_depth"]
