"""NYU Depth v2: folder exports (``NNNNNN.png`` + ``depth_gt_NNNNNN.png``) and the labeled ``.mat`` file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ...errors import DataError, InputError
from ...progress import progress
from .formats import read_png16
from .frame import RGBDFrame, make_frame
from .items import MM_SCALE, TUM_SCALE, PathLike, RGBDItem, _folder, read_items

# NYU Depth v2 toolbox (camera_params.m): colour camera intrinsics at 640x480.
NYU_INTRINSICS = (518.85790117450188, 519.46961112127485, 325.58244941119034, 253.73616633400465)


def infer_depth_scale(max_value: float, candidates: Sequence[float] = (MM_SCALE, TUM_SCALE),
                      max_range: float = 10.0) -> float:
    """The smallest candidate scale (units per metre) under which ``max_value`` is within ``max_range`` m.

    NYU Depth v2 exports store depth as 16-bit integers with an undocumented factor; Kinect
    depth ends near 10 m, so a maximum of 26142 rules out millimetres (26 m) and leaves 5000.
    """
    for s in sorted(candidates):
        if max_value / s <= max_range:
            return float(s)
    raise DataError(f"depth values up to {max_value:g} exceed {max_range} m under every scale in "
                    f"{list(candidates)}; pass scale= explicitly")


def find_nyu_folder(folder: PathLike, *, scene: str | None = None, scale: float | None = None) -> list[RGBDItem]:
    """NYU exports: ``NNNNNN.png`` + ``depth_gt_NNNNNN.png``; the scale is inferred when not given."""
    folder = _folder(folder)
    items = []
    depths = sorted(folder.glob("depth_gt_*.png"))
    for d in depths:
        idx = d.name[len("depth_gt_"):]
        img = folder / idx
        if not img.exists():
            raise DataError(f"{d} has no colour image {img.name} next to it")
        items.append(RGBDItem(img, d, scene or folder.name, scale, "png", NYU_INTRINSICS))
    if not items:
        raise DataError(f"no NYU frames (depth_gt_NNNNNN.png) in {folder}")
    if scale is None:
        # One scale for the whole folder, from (up to 20 of) its maps, so frames stay consistent.
        top = max(float(read_png16(it.depth).max()) for it in items[:: max(1, len(items) // 20)])
        s = infer_depth_scale(top)
        items = [replace(it, scale=s) for it in items]
    return items


def load_nyu_folder(folder: PathLike, *, scene: str | None = None, scale: float | None = None,
                    size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    return read_items(find_nyu_folder(folder, scene=scene, scale=scale), size)


def load_nyu_mat(path: PathLike, indices: Iterable[int] | None = None, *, raw_depth: bool = False,
                 size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    """Frames of the NYU Depth v2 labeled set (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5).

    The file stores MATLAB's column-major arrays, which h5py sees transposed: ``images`` is
    (N, 3, W, H) uint8 and ``depths`` (N, W, H) metres. ``raw_depth=True`` reads ``rawDepths``
    (with holes) instead of the inpainted ``depths``. Needs h5py (``pip install h5py``).
    """
    try:
        import h5py
    except ImportError:
        raise DataError("reading NYU .mat files needs h5py, which is not installed; run `pip install h5py`") from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NYU file {path} does not exist; check the path")
    key = "rawDepths" if raw_depth else "depths"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"cannot open {path} as a MATLAB v7.3 (HDF5) file ({e}); "
                        "re-save it with MATLAB's -v7.3 or download nyu_depth_v2_labeled.mat again") from None
    with f:
        if "images" not in f or key not in f:
            raise DataError(f"{path} has no 'images' and '{key}' datasets; is it nyu_depth_v2_labeled.mat?")
        images, depths = f["images"], f[key]
        if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3 or depths.shape[0] != images.shape[0] \
                or depths.shape[1:] != images.shape[2:]:
            raise DataError(f"{path}: expected images (N,3,W,H) and {key} (N,W,H), got {images.shape} and {depths.shape}")
        n = images.shape[0]
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise InputError(f"NYU indices {bad[:5]} out of range [0, {n})")
        scenes = _nyu_scene_names(f, n)
        frames = []
        for i in progress(idx, desc="nyu frames", unit="frame"):
            img = np.asarray(images[i]).transpose(2, 1, 0)  # (3,W,H) -> (H,W,3)
            dep = np.asarray(depths[i], dtype=np.float64).T  # (W,H) -> (H,W)
            if np.isnan(dep).any():
                raise DataError(f"{path}: {key}[{i}] contains NaN")
            valid = np.isfinite(dep) & (dep > 0)
            if not valid.any():
                raise DataError(f"{path}: {key}[{i}] has no valid pixel")
            scene = f"nyu/{scenes[i]}" if scenes else "nyu"
            fr = make_frame(img.astype(np.uint8), np.where(valid, dep, 0.0), valid, f"{path}[{i}]", scene=scene,
                            intrinsics=NYU_INTRINSICS if img.shape[:2] == (480, 640) else None)
            frames.append(fr.resized(size) if size is not None else fr)
    return frames


def _nyu_scene_names(f, n: int) -> list[str] | None:
    """Decode the MATLAB cell array ``scenes`` (references to uint16 char arrays), if present."""
    if "scenes" not in f:
        return None
    try:
        refs = np.asarray(f["scenes"]).ravel()
        names = ["".join(chr(int(c)) for c in np.asarray(f[r]).ravel()) for r in refs]
    except (KeyError, TypeError, ValueError, OSError):
        return None
    return names if len(names) == n else None


__all__ = ["NYU_INTRINSICS", "find_nyu_folder", "infer_depth_scale", "load_nyu_folder", "load_nyu_mat"]
