"""Self-normalising colour-depth alignment, seam and compression features of one RGB-D frame.

Phase 1's whole-frame edge statistics (:mod:`.features`) barely separate a real depth map from
a real depth map of *another* view (swapped), a shifted one, or a frame with a pasted rectangle:
how well depth edges sit on image edges varies more between cameras and scenes than between a
real frame and such a fake. These features compare each frame with itself instead:

* **offset curve**: the mean image-edge strength under the depth edges, with the depth moved by
  every offset of a grid (up to 12 pixels on each axis at 120x160). A registered depth map agrees
  best at (or next to) offset 0; a swapped one agrees about equally everywhere; a shifted one
  best at its shift. Summaries: the agreement at 0 relative to the median and the best of the
  other offsets, the rank of offset 0, the distance of the best offset from 0; the same with
  image and depth roles exchanged (depth-gradient strength under strong image edges);
* **per patch** (a 4x4 grid): the same zero-vs-best-offset gain per patch, summarised by
  quantiles over the patches with enough depth edges (a pasted or partly swapped region breaks
  alignment locally, which a whole-frame mean dilutes);
* **seams**: the longest straight run of one-pixel-sharp luminance steps along a row or column
  (a pasted rectangle leaves such a seam; edges of a resampled photo are a few pixels soft), and
  the same where depth steps too;
* **compression**: 8x8 block-boundary steps vs interior steps in both directions for depth and
  image, and the share of depth values on an 8-bit lattice between the frame's extremes (a depth
  map stored as 8-bit JPEG).

The offset, per-patch and seam features are computed again at half resolution (``*_half``).
All are ratios, ranks or shares: no depth unit, resolution or field of view enters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ALIGNMENT_NAMES", "OFFSETS", "alignment_features"]

#: Offsets (pixels at the working resolution) on each axis; the grid is their outer product.
OFFSETS = (-12, -8, -5, -3, -2, 0, 2, 3, 5, 8, 12)
#: A log-depth step this large between neighbours is a depth edge (as in :mod:`.features`).
DEPTH_EDGE = 0.05
GRID = 4
#: A patch summarises alignment only with at least this many depth-edge pixels.
MIN_PATCH_EDGES = 12
EPS = 1e-3

_FULL_NAMES: tuple[str, ...] = (
    "off_zero_vs_median", "off_zero_vs_best", "off_zero_rank", "off_best_dist", "off_curve_peak",
    "rev_zero_vs_median", "rev_zero_vs_best", "rev_zero_rank",
    "patch_gain_min", "patch_gain_q25", "patch_gain_q50", "patch_zero_best_share", "patch_used_share",
    "patch_rank_max", "patch_agree_spread",
    "seam_row", "seam_col", "seam_depth_row", "seam_depth_col",
    "depth_block_h", "depth_block_v", "image_block_v", "depth_on_8bit_lattice",
)
#: The offset, per-patch and seam features again at half resolution (2x2 pooled): offsets twice as
#: long and edges of sensors whose colour and depth are registered only to a few pixels (chosen
#: by the leave-one-source-out numbers: swapped depth caught 50 -> 59 % at the same real acceptance).
_HALF = 18
ALIGNMENT_NAMES: tuple[str, ...] = _FULL_NAMES + tuple(f"{n}_half" for n in _FULL_NAMES[:_HALF])


def _luma(image: np.ndarray) -> np.ndarray:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def _gradient(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(x)
    return np.hypot(gx, gy)


def _curve(field: np.ndarray, ys: np.ndarray, xs: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(len(OFFSETS), len(OFFSETS), N) values of ``field`` at the points (ys, xs) moved by every
    offset; points moved outside the frame read NaN (no wrap-around: an edge is not made up)."""
    H, W = field.shape
    out = np.full((len(OFFSETS), len(OFFSETS), ys.size), np.nan)
    for a, dy in enumerate(OFFSETS):
        y = ys + dy
        for b, dx in enumerate(OFFSETS):
            x = xs + dx
            ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
            v = np.full(ys.size, np.nan)
            v[ok] = field[y[ok], x[ok]]
            v[ok & ~inside[np.clip(y, 0, H - 1), np.clip(x, 0, W - 1)]] = np.nan
            out[a, b] = v
    return out


def _nanmean(vals: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where nothing is left (without numpy's warning)."""
    ok = np.isfinite(vals)
    n = ok.sum(axis=-1)
    total = np.where(ok, vals, 0.0).sum(axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _summary(means: np.ndarray) -> tuple[float, float, float, float]:
    """(log s0/median, log s0/best other, share of offsets at least as good as 0, distance of the best)
    of an offset curve ``means`` (len(OFFSETS), len(OFFSETS)); NaN-free."""
    z = len(OFFSETS) // 2
    s0 = means[z, z]
    other = np.delete(means.ravel(), z * len(OFFSETS) + z)
    other = other[np.isfinite(other)]
    if not np.isfinite(s0) or other.size == 0:
        return 0.0, 0.0, 1.0, 0.0
    best = np.unravel_index(np.nanargmax(means), means.shape)
    dist = float(np.hypot(OFFSETS[best[0]], OFFSETS[best[1]]))
    return (float(np.log((s0 + EPS) / (np.median(other) + EPS))), float(np.log((s0 + EPS) / (other.max() + EPS))),
            float((other >= s0).mean()), dist)


def _seam(step: np.ndarray, extra: np.ndarray | None = None) -> float:
    """Longest run, as a share of the line length, of one-pixel-sharp steps along one line of ``step``
    (steps between rows y-1 and y; rows of the array): a step is sharp when it exceeds 0.03 and three
    times both neighbouring steps across the line. ``extra``: a mask the step must also satisfy."""
    s = step[1:-1]
    sharp = (s > 0.03) & (s > 3 * step[:-2]) & (s > 3 * step[2:])
    if extra is not None:
        sharp &= extra[1:-1]
    if not sharp.any():
        return 0.0
    # Longest run of True along each row, allowing one-pixel gaps (closing along the row).
    closed = ndimage.binary_closing(sharp, structure=np.ones((1, 3), dtype=bool))
    best = 0
    for row in closed:
        if row.any():
            d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
            best = max(best, int((np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).max()))
    return best / step.shape[1]


def _block(x: np.ndarray, ok: np.ndarray, axis: int, block: int = 8) -> float:
    """log(mean |step| on the ``block`` grid / mean |step| elsewhere) along ``axis`` (0 = no blocks)."""
    d = np.abs(np.diff(x, axis=axis))
    m = ok[1:] & ok[:-1] if axis == 0 else ok[:, 1:] & ok[:, :-1]
    idx = np.arange(d.shape[axis]) % block == block - 1
    on = (idx[:, None] if axis == 0 else idx[None, :]) & m
    off = (~idx[:, None] if axis == 0 else ~idx[None, :]) & m
    if on.sum() < 5 or off.sum() < 5:
        return 0.0
    return float(np.log((d[on].mean() + 1e-6) / (d[off].mean() + 1e-6)))


def _lattice(d: np.ndarray) -> float:
    """Share of depth values within 0.1 of a code of the 255-level lattice from min to max (8-bit storage)."""
    lo, hi = float(d.min()), float(d.max())
    if hi - lo < 1e-9 or d.size < 10:
        return 1.0
    k = (d - lo) / (hi - lo) * 254
    return float((np.abs(k - np.round(k)) < 0.1).mean())


def alignment_features(image: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The :data:`ALIGNMENT_NAMES` vector (float64): image (3,H,W) in [0,1], depth (H,W) metres, valid (H,W)."""
    image = np.asarray(image, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & (depth > 0)
    H, W = depth.shape
    h, w = H // 2, W // 2
    # Half resolution: mean colour, a coarse pixel has depth only if all four have (its top-left reading).
    img2 = image[:, :2 * h, :2 * w].reshape(3, h, 2, w, 2).mean(axis=(2, 4))
    val2 = valid[:2 * h, :2 * w].reshape(h, 2, w, 2).all(axis=(1, 3))
    dep2 = depth[:2 * h:2, :2 * w:2] * val2
    return np.concatenate([_features(image, depth, valid), _features(img2, dep2, val2 & (dep2 > 0))[:_HALF]])


def _features(image: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The full-resolution part (:data:`_FULL_NAMES`) of :func:`alignment_features`."""
    f = dict.fromkeys(_FULL_NAMES, 0.0)
    f["off_zero_rank"] = f["rev_zero_rank"] = f["patch_rank_max"] = 1.0
    lum = _luma(image)
    H, W = lum.shape
    gi = _gradient(lum)
    # A one-pixel tolerance: colour and depth of a real sensor are registered to about a pixel.
    gi_soft = ndimage.maximum_filter(gi, size=3)
    gi_soft = gi_soft / (gi_soft.mean() + 1e-9)
    f["seam_row"] = _seam(np.abs(np.diff(lum, axis=0, prepend=lum[:1])))
    f["seam_col"] = _seam(np.abs(np.diff(lum, axis=1, prepend=lum[:, :1])).T)
    f["image_block_v"] = _block(lum, np.ones_like(valid), 0)
    if valid.sum() < 50:
        return np.array([f[k] for k in _FULL_NAMES], dtype=np.float64)
    med = float(np.median(depth[valid]))
    logd = np.where(valid, np.log(np.where(valid, depth, med) / med), 0.0)
    gd = _gradient(logd)
    # The gradient is defined where the pixel and its 4 neighbours have depth.
    ok = ndimage.binary_erosion(valid, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    dep_edge = (gd > DEPTH_EDGE) & ok
    ys, xs = np.nonzero(dep_edge)
    if ys.size >= 10:
        vals = _curve(gi_soft, ys, xs, np.ones_like(valid))  # (O, O, N)
        means = _nanmean(vals)
        a, b, c, d = _summary(means)
        f["off_zero_vs_median"], f["off_zero_vs_best"], f["off_zero_rank"], f["off_best_dist"] = a, b, c, d
        f["off_curve_peak"] = float(np.log((np.nanmax(means) + EPS) / (np.nanmedian(means) + EPS)))
        # Per patch: gain of offset 0 over the best other offset, over patches with enough depth edges.
        pid = (ys * GRID // H) * GRID + (xs * GRID // W)
        gains, ranks, zero_best, agree = [], [], 0, []
        for p in range(GRID * GRID):
            m = pid == p
            if m.sum() < MIN_PATCH_EDGES:
                continue
            pm = _nanmean(vals[:, :, m])
            _, g, r, dist = _summary(pm)
            gains.append(g)
            ranks.append(r)
            zero_best += dist <= 3
            agree.append(np.log(pm[len(OFFSETS) // 2, len(OFFSETS) // 2] + EPS))
        f["patch_used_share"] = len(gains) / (GRID * GRID)
        if gains:
            f["patch_gain_min"], f["patch_gain_q25"], f["patch_gain_q50"] = (float(q) for q in
                                                                             np.quantile(gains, [0, 0.25, 0.5]))
            f["patch_zero_best_share"] = zero_best / len(gains)
            f["patch_rank_max"] = float(np.max(ranks))
            f["patch_agree_spread"] = float(np.std(agree))
    # Reverse: depth-gradient strength under the strongest image edges, depth moved by each offset.
    strong = gi > max(float(np.quantile(gi, 0.9)), 0.01)
    yi, xi = np.nonzero(strong)
    if yi.size >= 10:
        gd_soft = ndimage.maximum_filter(np.where(ok, gd, 0.0), size=3)
        vals = _curve(gd_soft, yi, xi, ok)
        means = _nanmean(vals)
        f["rev_zero_vs_median"], f["rev_zero_vs_best"], f["rev_zero_rank"], _ = _summary(means)
    step_r = np.abs(np.diff(logd, axis=0, prepend=logd[:1])) > DEPTH_EDGE
    step_c = (np.abs(np.diff(logd, axis=1, prepend=logd[:, :1])) > DEPTH_EDGE).T
    f["seam_depth_row"] = _seam(np.abs(np.diff(lum, axis=0, prepend=lum[:1])), step_r)
    f["seam_depth_col"] = _seam(np.abs(np.diff(lum, axis=1, prepend=lum[:, :1])).T, step_c)
    f["depth_block_h"] = _block(logd, valid, 1)
    f["depth_block_v"] = _block(logd, valid, 0)
    f["depth_on_8bit_lattice"] = _lattice(depth[valid])
    return np.array([f[k] for k in _FULL_NAMES], dtype=np.float64)
