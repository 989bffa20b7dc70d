"""From RGB-D frames to network inputs: resizing, patch tiling, real-class augmentation, depth encoding.

Depth channel encoding (``encode_depth``), chosen default ``inverse``:

* ``inverse``: ``near / clamp(depth, near, far)``, i.e. scaled disparity, in [near/far, 1];
  invalid pixels are 0 (which reads as "infinitely far", the natural meaning of no return).
  A structured-light or stereo sensor measures disparity, so its noise and quantisation steps
  are uniform in this channel, where the classifier can see them at every distance; it also
  gives near surfaces, where image/depth consistency is easiest to judge, the most range.
* ``linear``: ``clamp(depth, near, far) / far`` in [near/far, 1]; invalid = 0.

Defaults ``near = 0.25 m``, ``far = 10 m`` (Kinect-class sensors read about 0.4-8 m; NYU
tops out near 10 m). Valid pixels never encode to 0, so "invalid" stays distinguishable.
All model inputs are in [0, 1]: ``to_network_input`` stacks RGB and the encoded depth into
(B, 4, H, W).
"""

from __future__ import annotations

from enum import Enum

import torch

from .._validation import check_images
from ..data.rgbd.frame import resize_rgbd
from ..errors import InputError
from .fakes import check_rgbd_batch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
NEAR = 0.25
FAR = 10.0


class DepthEncoding(str, Enum):
    INVERSE = "inverse"
    LINEAR = "linear"


def encode_depth(depth: torch.Tensor, valid: torch.Tensor, encoding: str | DepthEncoding = DepthEncoding.INVERSE,
                 near: float = NEAR, far: float = FAR) -> torch.Tensor:
    """Depth (B,1,H,W) metres -> a [0,1] network channel; invalid pixels are 0 (see the module docstring)."""
    try:
        enc = DepthEncoding(encoding)
    except ValueError:
        raise InputError(f"unknown depth encoding {encoding!r}; choose 'inverse' or 'linear'") from None
    if not 0 < near < far:
        raise InputError(f"need 0 < near < far, got near={near}, far={far}")
    d = depth.clamp(near, far)
    x = near / d if enc == DepthEncoding.INVERSE else d / far
    return torch.where(valid, x, torch.zeros_like(x))


def decode_depth(channel: torch.Tensor, encoding: str | DepthEncoding = DepthEncoding.INVERSE,
                 near: float = NEAR, far: float = FAR) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode_depth` (up to the clamping): returns (depth metres, valid)."""
    enc = DepthEncoding(encoding)
    valid = channel > 0
    safe = torch.where(valid, channel, torch.ones_like(channel))
    d = near / safe if enc == DepthEncoding.INVERSE else safe * far
    return torch.where(valid, d, torch.zeros_like(d)), valid


def to_network_input(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                     encoding: str | DepthEncoding = DepthEncoding.INVERSE, near: float = NEAR,
                     far: float = FAR) -> torch.Tensor:
    """(B,4,H,W) in [0,1]: RGB then the encoded depth channel."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    return torch.cat([image, encode_depth(depth, valid, encoding, near, far)], dim=1)


def resize_batch(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> Batch:
    """Resize to the working resolution: image bilinear (antialiased), depth/valid nearest."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    return resize_rgbd(image, depth, valid, size)


def patch_positions(height: int, width: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` x ``size`` patches every ``stride`` pixels; the last row and
    column are moved flush with the border so the whole frame is covered."""
    stride = stride or size
    if size < 1 or stride < 1:
        raise InputError(f"patch size and stride must be positive, got {size}, {stride}")
    if size > height or size > width:
        raise InputError(f"patch size {size} exceeds the frame {height}x{width}; resize the frame or use smaller patches")

    def starts(n: int) -> list[int]:
        s = list(range(0, n - size + 1, stride))
        if s[-1] != n - size:
            s.append(n - size)
        return s

    return [(y, x) for y in starts(height) for x in starts(width)]


def tile(x: torch.Tensor, size: int = 64, stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut (B,C,H,W) into patches (B*P, C, size, size); also returns (B*P, 3) rows ``b, y, x``."""
    if x.ndim != 4:
        raise InputError(f"tile expects (B, C, H, W), got shape {tuple(x.shape)}")
    B = x.shape[0]
    pos = patch_positions(x.shape[2], x.shape[3], size, stride)
    patches = torch.stack([x[:, :, y:y + size, xx:xx + size] for y, xx in pos], dim=1)  # (B, P, C, s, s)
    index = torch.tensor([(b, y, xx) for b in range(B) for y, xx in pos], dtype=torch.long).reshape(-1, 3)
    return patches.reshape(B * len(pos), *patches.shape[2:]), index


def tile_rgbd(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: int = 64,
              stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tile an RGB-D batch consistently: (image patches, depth patches, valid patches, index rows b,y,x)."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    ip, index = tile(image, size, stride)
    dp, _ = tile(depth, size, stride)
    vp, _ = tile(valid, size, stride)
    return ip, dp, vp, index


def random_crop(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: tuple[int, int], *,
                seed: int = 0) -> Batch:
    """One random ``size = (h, w)`` crop per frame (same window for image and depth; no resampling)."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    B, _, H, W = image.shape
    h, w = int(size[0]), int(size[1])
    if not (0 < h <= H and 0 < w <= W):
        raise InputError(f"crop size {size} must fit in the frame {H}x{W}")
    g = torch.Generator().manual_seed(int(seed))
    ys = torch.randint(0, H - h + 1, (B,), generator=g).tolist()
    xs = torch.randint(0, W - w + 1, (B,), generator=g).tolist()
    crop = lambda t: torch.stack([t[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(ys, xs))])  # noqa: E731
    return crop(image), crop(depth), crop(valid)


def augment_real(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                 flip: bool = True, crop: tuple[int, int] | None = None, brightness: float = 0.2,
                 contrast: float = 0.2, saturation: float = 0.2, gamma: float = 0.15) -> Batch:
    """Augment real pairs: horizontal flips and crops (geometry, applied to both), photometric
    jitter (image only: brightness, contrast, saturation, gamma, each a factor in 1 +- amount).

    No vertical flips (gravity is part of a real scene) and no rescaling: resampling depth
    would create the blocky or smoothed maps that the ``down_up_sample`` fake is made of,
    teaching the classifier that such artefacts are real.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation), ("gamma", gamma)):
        if not 0 <= v < 1:
            raise InputError(f"{name} jitter must be in [0, 1), got {v}")
    g = torch.Generator().manual_seed(int(seed))
    B = image.shape[0]
    if crop is not None:
        image, depth, valid = random_crop(image, depth, valid, crop, seed=int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    if flip:
        f = (torch.rand(B, generator=g) < 0.5)[:, None, None, None]
        image, depth, valid = (torch.where(f, t.flip(-1), t) for t in (image, depth, valid))
    u = 2 * torch.rand((B, 4), generator=g) - 1  # (B, 4) in [-1, 1)
    shape = (B, 1, 1, 1)
    x = image * (1 + brightness * u[:, 0]).view(shape)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + contrast * u[:, 1]).view(shape) + mean
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - grey) * (1 + saturation * u[:, 2]).view(shape) + grey
    x = x.clamp(0, 1) ** (1 + gamma * u[:, 3]).view(shape)
    return check_images(x.clamp(0, 1), "augmented image"), depth.clone(), valid.clone()


def sensor_holes(depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0, p: float = 0.5,
                 max_blobs: int = 6, max_blob_size: float = 0.25, edge_threshold: float = 0.08,
                 max_edge_width: int = 3, max_speckle: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Sensor-style missing readings on a random share ``p`` of the frames (batched, seeded).

    Real depth cameras lose readings in camera-specific patterns: shadows along depth
    discontinuities (structured light, stereo), blobs on dark, shiny or distant surfaces, and
    scattered pixels. A classifier trained on one camera learns its hole pattern as "real";
    applied to *both* classes during training (after the fakes are made), these holes carry no
    label, so the classifier has to judge the image/depth agreement of the pixels that remain.
    Per chosen frame: shadows of random width (0..``max_edge_width`` px) where neighbouring
    depths differ by more than ``edge_threshold`` (relative), up to ``max_blobs`` ellipses of up
    to ``max_blob_size`` of the frame's side, and up to ``max_speckle`` of the pixels at random.
    Returns ``(depth * valid, valid)``; only ever removes readings.
    """
    if not 0 <= p <= 1:
        raise InputError(f"p must be in [0, 1], got {p}")
    if depth.ndim != 4 or depth.shape[1] != 1 or valid.shape != depth.shape:
        raise InputError(f"depth and valid must both be (B, 1, H, W), got {tuple(depth.shape)} and {tuple(valid.shape)}")
    B, _, H, W = depth.shape
    g = torch.Generator().manual_seed(int(seed))
    chosen = (torch.rand(B, generator=g) < p).view(B, 1, 1, 1)
    drop = torch.zeros_like(valid, dtype=torch.bool)

    # 1. shadows at depth discontinuities, dilated by a per-frame width
    d = torch.where(valid, depth, torch.zeros_like(depth))
    rel = lambda a, b: (a - b).abs() / torch.maximum(a, b).clamp_min(1e-3)  # noqa: E731
    edge = torch.zeros_like(drop)
    edge[..., :, 1:] |= rel(d[..., :, 1:], d[..., :, :-1]) > edge_threshold
    edge[..., 1:, :] |= rel(d[..., 1:, :], d[..., :-1, :]) > edge_threshold
    edge &= valid
    widths = torch.randint(0, max_edge_width + 1, (B,), generator=g)
    for w in range(1, max_edge_width + 1):  # one max-pool per width, not per frame
        sel = (widths == w).view(B, 1, 1, 1)
        if sel.any():
            grown = torch.nn.functional.max_pool2d(edge.float(), 2 * w + 1, stride=1, padding=w) > 0
            drop |= grown & sel

    # 2. elliptic blobs
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    n_blobs = torch.randint(0, max_blobs + 1, (B,), generator=g)
    for k in range(max_blobs):
        u = torch.rand((B, 4), generator=g)
        cy, cx = u[:, 0] * H, u[:, 1] * W
        ry = (0.02 + u[:, 2] * max_blob_size) * H
        rx = (0.02 + u[:, 3] * max_blob_size) * W
        inside = ((ys - cy.view(B, 1, 1)) / ry.view(B, 1, 1)) ** 2 + ((xs - cx.view(B, 1, 1)) / rx.view(B, 1, 1)) ** 2 <= 1
        drop |= (inside & (n_blobs > k).view(B, 1, 1)).unsqueeze(1)

    # 3. speckle
    rate = torch.rand(B, generator=g) * max_speckle
    drop |= torch.rand(depth.shape, generator=g) < rate.view(B, 1, 1, 1)

    new_valid = valid & ~(drop & chosen)
    return depth * new_valid, new_valid


def random_hflip(gen: torch.Generator, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flip the same random half of the items of every (N, C, H, W) batch left-right (one draw per item)."""
    flip = torch.rand(len(batches[0]), generator=gen) < 0.5
    return tuple(torch.where(flip[:, None, None, None], b.flip(-1), b) for b in batches)
