"""Fake RGB-D pairs made from real ones: the negative class SceneProof learns to reject.

Every generator takes a real batch ``image`` (B,3,H,W) float in [0,1], ``depth`` (B,1,H,W)
metres (0 where invalid) and ``valid`` (B,1,H,W) bool, plus a keyword ``seed``, and returns a
new ``(image, depth, valid)`` triple with the same shapes and dtypes. Each changes only what
its name says; inputs are never modified in place. Random kinds are deterministic per seed.

Training kinds (``TRAIN_FAKES``): ``swap_depth``, ``predicted_depth``, ``insert_region``,
``shift_scale_depth``. Test-only kinds (``TEST_ONLY_FAKES``, never shown in training, to
measure generalisation): ``zero_depth``, ``down_up_sample``, ``jpeg_degrade``, ``rendered``.

Adversary kinds (``ADVERSARY_FAKES``, used by the leave-one-source-out evaluation,
:mod:`safetynet.sceneproof.loso`; not part of the CNN's training set): ``screen_photo`` (a
photo of a screen or print: depth is a slightly tilted plane at arm's length, with sensor-like
noise and holes), ``flat_print`` (the same plane without noise or holes) and
``luminance_depth`` (depth made from the image's brightness).
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .._validation import check_images
from ..errors import InputError

from .adversary_fakes import PLANE_FOCAL, flat_print, luminance, luminance_depth, plane_depth, screen_photo  # noqa: F401
from .rgbd_batch import Batch, DepthPredictor, check_rgbd_batch, seeded_generator as _gen  # noqa: F401  (re-exported)


def derangement(n: int, generator: torch.Generator, groups: list | tuple | None = None,
                max_tries: int = 1000) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` with no fixed point (rejection sampling).

    With ``groups`` (one label per item, e.g. scene ids) every item is also sent to an item
    of another group, so a fake never pairs two views of one scene.
    """
    if n < 2:
        raise InputError(f"a derangement needs at least 2 items, got {n}")
    g = None
    if groups is not None:
        if len(groups) != n:
            raise InputError(f"groups must have one label per frame ({n}), got {len(groups)}")
        labels = {k: i for i, k in enumerate(dict.fromkeys(groups))}
        g = torch.tensor([labels[k] for k in groups])
        if int(torch.bincount(g).max()) > n // 2:
            raise InputError("more than half of the batch comes from one group; no pairing avoids it "
                             "(mix scenes in each batch)")
    for _ in range(max_tries):
        perm = torch.randperm(n, generator=generator)
        ok = perm != torch.arange(n)
        if g is not None:
            ok &= g[perm] != g
        if bool(ok.all()):
            return perm
    raise InputError(f"no valid pairing found in {max_tries} tries; mix scenes more evenly in each batch")


# ------------------------------------------------------------------------------------------ train
def swap_depth(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
               groups: list | tuple | None = None) -> Batch:
    """Pair each image with the depth map of another frame of the batch (a derangement).

    ``groups`` (e.g. scene ids) additionally forbids pairing two frames of one scene.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid, min_batch=2)
    perm = derangement(image.shape[0], _gen(seed), groups)
    return image.clone(), depth[perm].clone(), valid[perm].clone()


def predicted_depth(image: torch.Tensor, depth: torch.Tensor | None = None, valid: torch.Tensor | None = None, *,
                    predictor: DepthPredictor | None = None, seed: int = 0, match_scale: bool = True,
                    keep_holes: bool = True) -> Batch:
    """Replace depth with a monocular prediction from the image.

    ``predictor`` maps images (B,3,H,W) in [0,1] to depth (B,1,H,W) in metres: a
    :class:`~safetynet.sceneproof.depth_regressor.DepthRegressor` or any external model.
    ``match_scale`` rescales each prediction to the real map's median (so absolute scale gives
    nothing away); ``keep_holes`` copies the real validity mask (so counting holes does not
    either). Without ``depth``/``valid`` the raw prediction is returned with every pixel valid.
    Deterministic: ``seed`` is accepted for a uniform interface and unused.
    """
    if predictor is None or not callable(predictor):
        raise InputError("predicted_depth needs predictor=, a callable images (B,3,H,W) -> depth (B,1,H,W) in "
                         "metres, e.g. train_depth_regressor(...) or an external monocular depth model")
    image = check_images(image, "image", channels=3)
    if depth is not None or valid is not None:
        if depth is None or valid is None:
            raise InputError("pass both depth and valid, or neither")
        image, depth, valid = check_rgbd_batch(image, depth, valid)
    with torch.no_grad():
        pred = predictor(image)
    B, _, H, W = image.shape
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != (B, 1, H, W):
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise InputError(f"predictor must return a tensor of shape {(B, 1, H, W)}, got {got}")
    pred = pred.detach().float()
    if not torch.isfinite(pred).all():
        raise InputError("predictor returned NaN or Inf depth")
    pred = pred.clamp_min(0)
    if depth is None:
        v = pred > 0
        return image.clone(), pred * v, v
    if match_scale:
        for i in range(B):
            m = valid[i] & (pred[i] > 0)
            if bool(m.any()):
                pred[i] = pred[i] * (depth[i][m].median() / pred[i][m].median())
    v = (valid & (pred > 0)) if keep_holes else (pred > 0)
    return image.clone(), pred * v, v


def insert_region_boxes(batch: int, height: int, width: int, *, seed: int = 0, min_frac: float = 0.2,
                        max_frac: float = 0.5, groups: list | tuple | None = None) -> torch.Tensor:
    """The rectangles :func:`insert_region` uses for this seed: (B, 7) long rows of
    ``donor, src_y, src_x, dst_y, dst_x, h, w``."""
    if not 0 < min_frac <= max_frac <= 1:
        raise InputError(f"need 0 < min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    g = _gen(seed)
    donor = derangement(batch, g, groups)
    fr = min_frac + (max_frac - min_frac) * torch.rand((batch, 2), generator=g)
    h = (fr[:, 0] * height).round().long().clamp(1, height)
    w = (fr[:, 1] * width).round().long().clamp(1, width)
    u = torch.rand((batch, 4), generator=g)
    sy = (u[:, 0] * (height - h + 1)).long()
    sx = (u[:, 1] * (width - w + 1)).long()
    dy = (u[:, 2] * (height - h + 1)).long()
    dx = (u[:, 3] * (width - w + 1)).long()
    return torch.stack([donor, sy, sx, dy, dx, h, w], dim=1)


def insert_region(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                  min_frac: float = 0.2, max_frac: float = 0.5, groups: list | tuple | None = None) -> Batch:
    """Paste a rectangle cut from another frame (image, depth and validity together) at a random place.

    Rectangle sides are ``min_frac``..``max_frac`` of the frame's; see :func:`insert_region_boxes`.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid, min_batch=2)
    B, _, H, W = image.shape
    boxes = insert_region_boxes(B, H, W, seed=seed, min_frac=min_frac, max_frac=max_frac, groups=groups)
    img, dep, val = image.clone(), depth.clone(), valid.clone()
    for i, (j, sy, sx, dy, dx, h, w) in enumerate(boxes.tolist()):  # per frame, not per pixel
        img[i, :, dy:dy + h, dx:dx + w] = image[j, :, sy:sy + h, sx:sx + w]
        dep[i, :, dy:dy + h, dx:dx + w] = depth[j, :, sy:sy + h, sx:sx + w]
        val[i, :, dy:dy + h, dx:dx + w] = valid[j, :, sy:sy + h, sx:sx + w]
    return img, dep, val


def shift_scale_depth(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                      min_shift: float = 0.03, max_shift: float = 0.12,
                      scale_range: tuple[float, float] = (0.6, 0.85)) -> Batch:
    """Misalign depth with the image: shift it by pixels, scale its values, or both (chosen per frame).

    Shifts are ``min_shift``..``max_shift`` of the frame size along each shifted axis (the
    uncovered border becomes invalid); scales are drawn from ``scale_range`` or its reciprocal.
    The image is untouched.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    lo, hi = scale_range
    if not 0 < lo <= hi < 1:
        raise InputError(f"scale_range must satisfy 0 < low <= high < 1 (its reciprocals are used too), got {scale_range}")
    if not 0 <= min_shift <= max_shift < 1:
        raise InputError(f"need 0 <= min_shift <= max_shift < 1, got {min_shift}, {max_shift}")
    B, _, H, W = image.shape
    g = _gen(seed)
    mode = torch.randint(0, 3, (B,), generator=g)  # 0 shift, 1 scale, 2 both
    u = torch.rand((B, 6), generator=g)
    dep, val = depth.clone(), valid.clone()
    for i in range(B):
        if int(mode[i]) in (0, 2):
            axes = int(u[i, 0] * 3)  # 0: x, 1: y, 2: both
            mag = min_shift + (max_shift - min_shift) * u[i, 1:3]
            sgn = torch.where(u[i, 3:5] < 0.5, -1, 1)
            dx = int(sgn[0] * max(1, round(float(mag[0]) * W))) if axes in (0, 2) else 0
            dy = int(sgn[1] * max(1, round(float(mag[1]) * H))) if axes in (1, 2) else 0
            dep[i], val[i] = _shift(depth[i], dy, dx), _shift(valid[i], dy, dx)
        if int(mode[i]) in (1, 2):
            s = lo + (hi - lo) * float(u[i, 5])
            if float(u[i, 4]) < 0.5:
                s = 1.0 / s
            dep[i] = dep[i] * s
    return image.clone(), dep * val, val


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift (C,H,W) content by (dy, dx) pixels; the uncovered border is zero/False (no wrap-around)."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[:, yd, xd] = x[:, ys, xs]
    return out


# -------------------------------------------------------------------------------------- test only
def zero_depth(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0) -> Batch:
    """No depth at all: every pixel invalid. Deterministic (``seed`` unused)."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    return image.clone(), torch.zeros_like(depth), torch.zeros_like(valid)


def down_up_sample(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                   factor: int = 4) -> Batch:
    """Nearest-neighbour downsampling by ``factor`` and back, for image and depth. Deterministic."""
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    if not isinstance(factor, int) or factor < 2:
        raise InputError(f"factor must be an integer >= 2, got {factor!r}")
    H, W = image.shape[-2:]
    small = (max(1, -(-H // factor)), max(1, -(-W // factor)))

    def du(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.interpolate(x, size=small, mode="nearest"), size=(H, W), mode="nearest")

    val = du(valid.to(torch.uint8)).bool()
    return du(image), du(depth) * val, val


def jpeg_degrade(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
                 quality: int = 10, depth_quality: int | None = None) -> Batch:
    """Low-quality JPEG of the image and of the depth map (quantised to 8 bits first). Deterministic.

    Depth is mapped per frame to codes 1..255 between its smallest and largest valid value
    (0 = invalid), JPEG-compressed as grey, decoded and mapped back; pixels that were invalid
    stay invalid, and valid pixels whose code decodes to 0 become invalid.
    """
    image, depth, valid = check_rgbd_batch(image, depth, valid)
    if not 1 <= int(quality) <= 95:
        raise InputError(f"quality must be in [1, 95], got {quality}")
    dq = int(depth_quality if depth_quality is not None else quality)
    imgs, deps, vals = [], [], []
    for i in range(image.shape[0]):  # PIL codes one picture at a time
        u8 = (image[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        imgs.append(torch.from_numpy(_jpeg(u8, int(quality))).permute(2, 0, 1).float() / 255)
        d, v = depth[i, 0].double(), valid[i, 0]
        if bool(v.any()):
            lo, hi = d[v].min(), d[v].max()
            span = (hi - lo).clamp_min(1e-9)
            code = torch.where(v, 1 + torch.round((d - lo) / span * 254), torch.zeros_like(d)).to(torch.uint8)
            dec = torch.from_numpy(_jpeg(code.numpy(), dq)).double()
            vi = v & (dec >= 1)
            di = torch.where(vi, lo + (dec - 1).clamp_min(0) / 254 * span, torch.zeros_like(d))
        else:
            vi, di = v.clone(), torch.zeros_like(d)
        deps.append(di.float()[None])
        vals.append(vi[None])
    return torch.stack(imgs), torch.stack(deps), torch.stack(vals)


def _jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB" if arr.ndim == 3 else "L")).copy()


def rendered(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, *, seed: int = 0,
             **simulator_options) -> Batch:
    """Noise-free synthetic renders from :func:`~safetynet.data.rgbd.simulator.simulate_scenes`.

    Only the batch size and frame size of the input are used: rendered data (like ICL-NUIM,
    Sintel or Middlebury) must be rejected whatever it shows. Every pixel is valid.
    """
    from ..data.rgbd.simulator import simulate_scenes

    image, depth, valid = check_rgbd_batch(image, depth, valid)
    B, _, H, W = image.shape
    sim = simulate_scenes(B, size=(H, W), seed=seed, **simulator_options)
    return sim.image, sim.depth, torch.ones_like(valid)


TRAIN_FAKES: dict[str, Callable[..., Batch]] = {
    "swap_depth": swap_depth,
    "predicted_depth": predicted_depth,
    "insert_region": insert_region,
    "shift_scale_depth": shift_scale_depth,
}
TEST_ONLY_FAKES: dict[str, Callable[..., Batch]] = {
    "zero_depth": zero_depth,
    "down_up_sample": down_up_sample,
    "jpeg_degrade": jpeg_degrade,
    "rendered": rendered,
}
FAKES: dict[str, Callable[..., Batch]] = {**TRAIN_FAKES, **TEST_ONLY_FAKES}
#: Fakes a real adversary would make (leave-one-source-out evaluation; not in the CNN's training set).
ADVERSARY_FAKES: dict[str, Callable[..., Batch]] = {
    "screen_photo": screen_photo,
    "flat_print": flat_print,
    "luminance_depth": luminance_depth,
}
# Kinds whose output depends on the seed (the others are deterministic functions of the input).
RANDOM_FAKES = ("swap_depth", "insert_region", "shift_scale_depth", "rendered", "screen_photo", "flat_print",
                "luminance_depth")


def make_fakes(kind: str, image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, seed: int = 0,
               **options) -> Batch:
    """Apply the fake generator ``kind`` (a key of ``FAKES`` or ``ADVERSARY_FAKES``) to a real batch."""
    fn = FAKES.get(kind) or ADVERSARY_FAKES.get(kind)
    if fn is None:
        raise InputError(f"unknown fake kind {kind!r}; choose one of {', '.join([*FAKES, *ADVERSARY_FAKES])}")
    return fn(image, depth, valid, seed=seed, **options)
