"""Camera-independent features of one RGB-D frame, for the leave-one-source-out model.

Every feature is a statistic of the whole frame at the working resolution that does not depend
on the sensor's absolute depth unit, resolution or field of view (depth enters as log-depth or
depth divided by its median; edges are compared in relative terms), so that a classifier trained
on some cameras has a chance on others. Groups:

* missing depth: valid share, how fragmented the holes are, whether holes sit on image edges
  (real sensors lose depth at object boundaries and on dark/shiny surfaces);
* depth spread: log-depth spread and median depth in metres (screens and prints are near);
* planarity: least-squares fit of inverse depth as an affine function of the pixel coordinates
  (exact for any plane under a pinhole camera): a photo of a screen or print is one plane;
* depth vs luminance: global and local (16x16 block) correlation of depth and brightness
  (catches depth made from brightness);
* colour-depth edge agreement at scales 1, 2 and 4: do depth discontinuities coincide with image
  edges, and do they coincide better unshifted than shifted by 3 pixels (on average over 4 directions) (catches swapped and
  shifted depth); and the same as distances: how near depth edges lie to image edges relative
  to chance (a chamfer ratio);
* depth noise and smoothness: Laplacian of log-depth, flat share, equal-neighbour share and
  unique-level share (rendered depth is noise-free, down-up sampled depth is blocky);
* JPEG blockiness of image and depth on the 8-pixel grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["FEATURE_NAMES", "chamfer_ratio", "edge_agreement", "frame_features", "plane_residual"]

SCALES = (1, 2, 4)
#: A log-depth step this large between neighbours is a depth edge (a 5 % jump, any depth unit).
DEPTH_EDGE = 0.05
#: Image edges: the strongest share of luminance gradients, per frame (independent of exposure).
IMAGE_EDGE_SHARE = 0.2
#: ... but never a luminance step below this per pixel (a flat, noisy image has no edges).
MIN_IMAGE_EDGE = 0.01
SHIFT = 3

FEATURE_NAMES: tuple[str, ...] = (
    "valid_share", "hole_fragmentation", "holes_on_image_edges",
    "log_depth_std", "depth_p05_rel", "depth_p95_rel", "median_depth_m",
    "plane_residual", "plane_inliers",
    "corr_lum_depth", "corr_lum_invdepth", "local_corr_lum_depth", "local_corr_lum_depth_p90",
    *(f"edge_agree_s{s}" for s in SCALES), *(f"edge_recall_s{s}" for s in SCALES),
    *(f"edge_grad_corr_s{s}" for s in SCALES),
    "edge_agree_shift_gain", "depth_edge_share",
    *(f"chamfer_depth_to_image_s{s}" for s in SCALES), "chamfer_image_to_depth_s1", "chamfer_shift_gain",
    "lap_log_depth_p50", "lap_log_depth_p90", "flat_share", "grad_log_depth_p50", "grad_log_depth_p90",
    "depth_equal_neighbours", "depth_unique_share", "image_equal_neighbours",
    "image_blockiness", "depth_blockiness", "lum_std", "image_highfreq", "image_highfreq_on_flat_depth",
)


def _luma(image: np.ndarray) -> np.ndarray:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (no evidence either way)."""
    if a.size < 3:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def plane_residual(depth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(median |residual| / median inverse depth, share of pixels within 1 %) of the best plane.

    Inverse depth of a plane is affine in the pixel coordinates for any pinhole camera, so the fit
    needs no intrinsics: ``1/z = a x + b y + c``.
    """
    ys, xs = np.nonzero(valid)
    if ys.size < 10:
        return 1.0, 0.0
    inv = 1.0 / depth[ys, xs].astype(np.float64)
    H, W = depth.shape
    A = np.stack([xs / W, ys / H, np.ones_like(inv)], axis=1)
    coef, *_ = np.linalg.lstsq(A, inv, rcond=None)
    r = np.abs(inv - A @ coef)
    m = float(np.median(inv))
    return float(np.median(r) / m), float((r < 0.01 * m).mean())


def _grad(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient magnitude of ``x`` and where it is defined (all four neighbours valid)."""
    p = np.pad(x, 1, mode="edge")
    pv = np.pad(v, 1, mode="constant", constant_values=False)
    gx = (p[1:-1, 2:] - p[1:-1, :-2]) / 2
    gy = (p[2:, 1:-1] - p[:-2, 1:-1]) / 2
    ok = v & pv[1:-1, 2:] & pv[1:-1, :-2] & pv[2:, 1:-1] & pv[:-2, 1:-1]
    return np.hypot(gx, gy), ok


def _shrink(x: np.ndarray, s: int, how: str) -> np.ndarray:
    if s == 1:
        return x
    H, W = (x.shape[0] // s) * s, (x.shape[1] // s) * s
    b = x[:H, :W].reshape(H // s, s, W // s, s)
    return b.mean(axis=(1, 3)) if how == "mean" else b.min(axis=(1, 3))


Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _edges(lum: np.ndarray, log_depth: np.ndarray, valid: np.ndarray, shift: tuple[int, int],
           gi: np.ndarray | None = None) -> Edges | None:
    """(image gradient, depth gradient, where the depth gradient is defined, strong image edges,
    depth edges), depth moved by ``shift`` first; None when too little depth has a gradient.
    ``gi``: the image gradient of ``lum`` if the caller has it (it does not depend on the shift)."""
    if gi is None:
        gi, _ = _grad(lum, np.ones_like(valid))
    if shift != (0, 0):
        log_depth = np.roll(log_depth, shift, axis=(0, 1))
        valid = np.roll(valid, shift, axis=(0, 1))
    gd, ok = _grad(log_depth, valid)
    if ok.sum() < 10:
        return None
    # A floor on the threshold keeps sensor noise of a flat image from counting as edges.
    strong = gi > max(float(np.quantile(gi[ok], 1 - IMAGE_EDGE_SHARE)), MIN_IMAGE_EDGE)
    return gi, gd, ok, strong, (gd > DEPTH_EDGE) & ok


def edge_agreement(lum: np.ndarray, log_depth: np.ndarray, valid: np.ndarray, shift: tuple[int, int] = (0, 0)
                   ) -> tuple[float, float, float]:
    """(share of depth edges on an image edge, share of image edges on a depth edge, gradient correlation).

    Image edges are the ``IMAGE_EDGE_SHARE`` strongest luminance gradients dilated by one pixel;
    depth edges are log-depth gradients above ``DEPTH_EDGE``. ``shift`` moves the depth maps by
    (dy, dx) pixels first (with wrap-around, on purpose cheap: only used to compare with 0 shift).
    """
    return _agreement(_edges(lum, log_depth, valid, shift))


def _agreement(edges: Edges | None) -> tuple[float, float, float]:
    """:func:`edge_agreement` of already computed edges."""
    if edges is None:
        return 0.0, 0.0, 0.0
    gi, gd, ok, strong, dep_edge = edges
    img_edge = ndimage.binary_dilation(strong, iterations=1)
    dep_edge_d = ndimage.binary_dilation(dep_edge, iterations=1)
    agree = float(img_edge[dep_edge].mean()) if dep_edge.any() else 0.0
    strong_img = strong & ok
    recall = float(dep_edge_d[strong_img].mean()) if strong_img.any() else 0.0
    gcorr = _corr(np.log(gi[ok] + 1e-3), np.log(gd[ok] + 1e-4))
    return agree, recall, gcorr


def chamfer_ratio(lum: np.ndarray, log_depth: np.ndarray, valid: np.ndarray, shift: tuple[int, int] = (0, 0)
                  ) -> tuple[float, float]:
    """How close depth edges lie to image edges, relative to chance, and the reverse.

    First value: mean distance (pixels) from each depth edge to the nearest image edge, divided by
    the mean of that distance over all valid pixels (about 1 when depth edges ignore the image, as
    for swapped depth; well below 1 for a real capture). Second: the same from strong image edges to
    the nearest depth edge. 1.0 when there are no edges to compare. ``shift`` as in :func:`edge_agreement`.
    """
    return _chamfer(_edges(lum, log_depth, valid, shift))


def _chamfer(edges: Edges | None) -> tuple[float, float]:
    """:func:`chamfer_ratio` of already computed edges."""
    if edges is None:
        return 1.0, 1.0
    _, _, ok, img_edge, dep_edge = edges
    out = []
    for edges, at in ((img_edge, dep_edge), (dep_edge, img_edge & ok)):
        if not edges.any() or not at.any():
            out.append(1.0)
            continue
        dist = ndimage.distance_transform_edt(~edges)
        out.append(float(dist[at].mean() / (dist[ok].mean() + 1e-6)))
    return out[0], out[1]


def _blockiness(x: np.ndarray, ok: np.ndarray, block: int = 8) -> float:
    """Mean |horizontal step| on the ``block`` grid divided by the mean step elsewhere (1 = no blocks)."""
    d = np.abs(np.diff(x, axis=1))
    m = ok[:, 1:] & ok[:, :-1]
    cols = np.arange(d.shape[1])
    on = (cols % block) == block - 1
    a, b = d[:, on][m[:, on]], d[:, ~on][m[:, ~on]]
    if a.size < 5 or b.size < 5:
        return 1.0
    return float((a.mean() + 1e-6) / (b.mean() + 1e-6))


def _local_corr(lum: np.ndarray, depth: np.ndarray, valid: np.ndarray, block: int = 16) -> tuple[float, float]:
    """Median and 90th percentile of |corr(luma, depth)| over blocks with enough valid pixels."""
    H, W = lum.shape
    vals = []
    for y in range(0, H - block + 1, block):
        for x in range(0, W - block + 1, block):
            v = valid[y:y + block, x:x + block]
            if v.sum() >= block * block // 2:
                vals.append(abs(_corr(lum[y:y + block, x:x + block][v], depth[y:y + block, x:x + block][v])))
    if not vals:
        return 0.0, 0.0
    return float(np.median(vals)), float(np.quantile(vals, 0.9))


def frame_features(image: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The :data:`FEATURE_NAMES` vector (float64) of one frame: image (3,H,W) in [0,1], depth (H,W) metres, valid (H,W)."""
    image = np.asarray(image, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & (depth > 0)
    lum = _luma(image)
    H, W = depth.shape
    n = valid.sum()
    f: dict[str, float] = {name: 0.0 for name in FEATURE_NAMES}
    f["valid_share"] = float(n / valid.size)
    gi, _ = _grad(lum, np.ones_like(valid))
    img_edges = gi > max(float(np.quantile(gi, 1 - IMAGE_EDGE_SHARE)), MIN_IMAGE_EDGE)
    f["lum_std"] = float(lum.std())
    lap_i = np.abs(ndimage.laplace(lum))
    f["image_highfreq"] = float(lap_i.mean())
    f["image_equal_neighbours"] = float((np.abs(np.diff(lum, axis=1)) < 1e-6).mean())
    f["image_blockiness"] = _blockiness(lum, np.ones_like(valid))
    holes = ~valid
    if holes.any():
        boundary = holes & ~ndimage.binary_erosion(holes, iterations=1, border_value=1)
        f["hole_fragmentation"] = float(boundary.sum() / np.sqrt(holes.sum()) / 4)
        f["holes_on_image_edges"] = float(img_edges[holes].mean())
    if n < 10:  # no depth: the depth features stay 0 (the model abstains on such frames anyway)
        return np.array([f[k] for k in FEATURE_NAMES], dtype=np.float64)
    d = depth[valid]
    med = float(np.median(d))
    logd = np.where(valid, np.log(np.where(valid, depth, med) / med), 0.0)
    f["log_depth_std"] = float(logd[valid].std())
    f["depth_p05_rel"], f["depth_p95_rel"] = (float(q) for q in np.quantile(d / med, [0.05, 0.95]))
    f["median_depth_m"] = med
    f["plane_residual"], f["plane_inliers"] = plane_residual(depth, valid)
    f["corr_lum_depth"] = _corr(lum[valid], d)
    f["corr_lum_invdepth"] = _corr(lum[valid], 1.0 / d)
    f["local_corr_lum_depth"], f["local_corr_lum_depth_p90"] = _local_corr(lum, depth, valid)
    # Each (scale, shift) edge set is computed once and read by both the agreement and the chamfer
    # features; the full-resolution image gradient ``gi`` serves every shift.
    for s in SCALES:
        ls = _shrink(lum, s, "mean")
        vs = _shrink(valid.astype(np.float64), s, "min") > 0  # a coarse pixel is valid if all its pixels are
        ds = _shrink(np.where(valid, logd, 0.0), s, "mean")
        edges = _edges(ls, ds, vs, (0, 0), gi=gi if s == 1 else None)
        a, r, c = _agreement(edges)
        f[f"edge_agree_s{s}"], f[f"edge_recall_s{s}"], f[f"edge_grad_corr_s{s}"] = a, r, c
        ch = _chamfer(edges)
        f[f"chamfer_depth_to_image_s{s}"] = ch[0]
        if s == 1:
            f["chamfer_image_to_depth_s1"] = ch[1]
    shifted = [_edges(lum, logd, valid, sh, gi=gi) for sh in ((0, SHIFT), (0, -SHIFT), (SHIFT, 0), (-SHIFT, 0))]
    # Mean, not max: an edge along the shift direction still agrees after the shift.
    f["edge_agree_shift_gain"] = f["edge_agree_s1"] - float(np.mean([_agreement(e)[0] for e in shifted]))
    f["chamfer_shift_gain"] = float(np.mean([_chamfer(e)[0] for e in shifted])) - f["chamfer_depth_to_image_s1"]
    gd, ok = _grad(logd, valid)
    if ok.any():
        f["depth_edge_share"] = float((gd[ok] > DEPTH_EDGE).mean())
        f["grad_log_depth_p50"], f["grad_log_depth_p90"] = (float(q) for q in np.quantile(gd[ok], [0.5, 0.9]))
        flat = ok & (gd < 0.005)
        f["flat_share"] = float(flat.sum() / ok.sum())
        lap = np.abs(ndimage.laplace(logd))
        interior = ok & (gd < DEPTH_EDGE)
        if interior.any():
            f["lap_log_depth_p50"], f["lap_log_depth_p90"] = (float(q) for q in np.quantile(lap[interior], [0.5, 0.9]))
        if flat.any():
            f["image_highfreq_on_flat_depth"] = float(lap_i[flat].mean() / (f["image_highfreq"] + 1e-6))
    pair = valid[:, 1:] & valid[:, :-1]
    if pair.any():
        f["depth_equal_neighbours"] = float((np.abs(np.diff(depth, axis=1))[pair] < 1e-6).mean())
    f["depth_unique_share"] = float(np.unique(np.round(d, 4)).size / d.size)
    f["depth_blockiness"] = _blockiness(logd, valid)
    return np.array([f[k] for k in FEATURE_NAMES], dtype=np.float64)
