"""Data-set layouts: pairing colour and depth files, scales and scene ids, and the real-capture walker.

Reading happens in two steps so that splits can be made by scene before anything is decoded:
``find_rgbd_items(root)`` lists :class:`RGBDItem` (paths + how to read them) and
``read_item(item)`` decodes one into an :class:`RGBDFrame`. ``load_real_frames(root)`` does both.

Layouts recognised by ``find_rgbd_items`` (each folder is checked in this order, then its
remaining sub-folders are walked):

* 7-Scenes: ``frame-NNNNNN.color.{jpg,png}`` + ``frame-NNNNNN.depth.png`` (mm; 65535 = none);
* TUM RGB-D: ``associations.txt`` or ``rgb.txt`` + ``depth.txt`` (value / 5000);
* colour/depth folders (Open3D, ICL-NUIM, slambook): ``color/N.*`` + ``depth/N.{png,pgm}``,
  paired by Open3D's ``rgbd.match`` when present, else by file stem;
* NYU Depth v2 exports: ``NNNNNN.png`` + ``depth_gt_NNNNNN.png`` (scale inferred, see
  :func:`infer_depth_scale`);
* suffix pairs: ``X.png`` + ``X_depth.png`` or ``X_color.*`` + ``X_depth.*``; the prefixes
  ``NYU``/``SUN``/``TUM`` select the raw NYU, SUN RGB-D and TUM conventions (Open3D's
  ``other_formats``);
* prefix pairs: ``rgbN.png`` + ``depthN.png``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ...errors import DataError, InputError
from ...progress import progress
from .formats import DepthFormat, read_depth_array, read_image, read_png16
from .frame import RGBDFrame, make_frame

PathLike = str | os.PathLike[str]
logger = logging.getLogger(__name__)

TUM_SCALE = 5000.0
MM_SCALE = 1000.0
# NYU Depth v2 toolbox (camera_params.m): colour camera intrinsics at 640x480.
NYU_INTRINSICS = (518.85790117450188, 519.46961112127485, 325.58244941119034, 253.73616633400465)
# Folder-name hints for rendered (synthetic) data: never part of the real class by default.
RENDERED_HINTS = ("rendered", "icl-nuim", "icl_nuim", "sintel", "middlebury")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
_DEPTH_SUFFIXES = (".png", ".pgm", ".npy", ".pfm", ".dpt")


@dataclass(frozen=True)
class RGBDItem:
    """Where one frame lives and how to read it (nothing decoded yet)."""

    image: Path
    depth: Path
    scene: str
    scale: float | None = None
    format: str | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    rendered: bool = False


def read_frame(image_path: PathLike, depth_path: PathLike, *, scale: float | None = None,
               format: str | DepthFormat | None = None, calib: PathLike | dict[str, float] | None = None,
               max_depth: float | None = None, resize_depth_to_image: bool = False, scene: str = "",
               intrinsics: tuple[float, float, float, float] | None = None) -> RGBDFrame:
    """Read one colour image and its depth map (see :func:`read_depth` for ``scale``/``format``)."""
    image = read_image(image_path)
    depth, valid = read_depth_array(depth_path, scale, format=format, calib=calib, max_depth=max_depth)
    return make_frame(image, depth, valid, source=f"{image_path}|{depth_path}", scene=scene,
                      intrinsics=intrinsics, resize_depth_to_image=resize_depth_to_image)


def read_item(item: RGBDItem, size: tuple[int, int] | None = None) -> RGBDFrame:
    """Decode an :class:`RGBDItem`; ``size = (H, W)`` resizes (image bilinear, depth nearest)."""
    frame = read_frame(item.image, item.depth, scale=item.scale, format=item.format, scene=item.scene,
                       intrinsics=item.intrinsics)
    return frame.resized(size) if size is not None else frame


def read_items(items: Sequence[RGBDItem], size: tuple[int, int] | None = None,
               desc: str = "rgbd frames") -> list[RGBDFrame]:
    return [read_item(it, size) for it in progress(items, desc=desc, unit="frame")]


def read_intrinsics(path: PathLike) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from a text file holding a 3x3 camera matrix."""
    path = Path(path)
    try:
        k = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read camera intrinsics {path}: {e}") from None
    if k.shape != (3, 3):
        raise DataError(f"camera intrinsics {path} must hold a 3x3 matrix, got shape {k.shape}")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def _folder(folder: PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder {folder} does not exist; check the path")
    return folder


def _is_rendered(name: str) -> bool:
    low = name.lower()
    return any(h in low for h in RENDERED_HINTS)


def _subsample(items: list[RGBDItem], step: int, limit: int | None) -> list[RGBDItem]:
    if not isinstance(step, int) or step < 1:
        raise InputError(f"step must be a positive integer, got {step!r}")
    items = items[::step]
    return items[:limit] if limit is not None else items


# ---------------------------------------------------------------------------------------- 7-Scenes
def find_7scenes(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE) -> list[RGBDItem]:
    folder = _folder(folder)
    intr = None
    for name in ("camera-intrinsics.txt", "intrinsics.K.txt"):
        if (folder / name).exists():
            intr = read_intrinsics(folder / name)
            break
    items = []
    for depth in sorted(folder.glob("frame-*.depth.png")):
        stem = depth.name[: -len(".depth.png")]
        image = next((folder / f"{stem}.color{s}" for s in _IMAGE_SUFFIXES
                      if (folder / f"{stem}.color{s}").exists()), None)
        if image is None:
            raise DataError(f"{depth} has no colour image {stem}.color.jpg/.png next to it")
        items.append(RGBDItem(image, depth, scene or folder.name, scale, "png", intr, _is_rendered(folder.name)))
    if not items:
        raise DataError(f"no 7-Scenes frames (frame-NNNNNN.depth.png) in {folder}")
    return items


def load_7scenes(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE, step: int = 1,
                 limit: int | None = None, size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    """7-Scenes layout (also the shared ``box-scene``): 16-bit mm depth, 65535 = no reading."""
    return read_items(_subsample(find_7scenes(folder, scene=scene, scale=scale), step, limit), size)


# ------------------------------------------------------------------------------------------- TUM
def read_tum_list(path: PathLike) -> list[tuple[float, str]]:
    """``timestamp filename`` lines of a TUM ``rgb.txt``/``depth.txt`` (``#`` comments skipped)."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            out.append((float(parts[0]), parts[1]))
        except (ValueError, IndexError):
            raise DataError(f"{path}:{n}: expected 'timestamp filename', got {line!r}") from None
    return out


def associate_timestamps(first: Sequence[float], second: Sequence[float],
                         max_difference: float = 0.02) -> list[tuple[int, int]]:
    """Match two timestamp lists one-to-one, as TUM's ``associate.py`` does.

    Candidate pairs closer than ``max_difference`` seconds are taken greedily, closest first;
    each timestamp is used at most once. Returns index pairs sorted by the first list.
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    order = np.argsort(b, kind="stable")
    bs = b[order]
    lo = np.searchsorted(bs, a - max_difference, side="left")
    hi = np.searchsorted(bs, a + max_difference, side="right")
    cands = []
    for i in range(len(a)):  # per timestamp, not per pixel: a few thousand at most
        for k in range(lo[i], hi[i]):
            d = abs(a[i] - bs[k])
            if d < max_difference:
                cands.append((d, i, int(order[k])))
    cands.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def find_tum(folder: PathLike, *, scene: str | None = None, scale: float = TUM_SCALE,
             max_difference: float = 0.02, use_associations: bool = True) -> list[RGBDItem]:
    folder = _folder(folder)
    scene = scene or folder.name
    pairs: list[tuple[str, str]] = []
    assoc = folder / "associations.txt"
    if use_associations and assoc.exists():
        for n, line in enumerate(assoc.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) < 4:
                raise DataError(f"{assoc}:{n}: expected 'time file time file', got {line.strip()!r}")
            p1, p2 = parts[1], parts[3]
            # associate.py writes its arguments' order; rgb first is the convention, but
            # depth-first files exist, so the folder names decide.
            if "depth" in p1.lower() and "depth" not in p2.lower():
                p1, p2 = p2, p1
            pairs.append((p1, p2))
    else:
        rgb_txt, depth_txt = folder / "rgb.txt", folder / "depth.txt"
        if not (rgb_txt.exists() and depth_txt.exists()):
            raise DataError(f"{folder} is not a TUM RGB-D folder: need associations.txt or rgb.txt + depth.txt")
        rgb, dep = read_tum_list(rgb_txt), read_tum_list(depth_txt)
        for i, j in associate_timestamps([t for t, _ in rgb], [t for t, _ in dep], max_difference):
            pairs.append((rgb[i][1], dep[j][1]))
    if not pairs:
        raise DataError(f"no colour/depth pairs within {max_difference} s in {folder}")
    items, missing = [], 0
    for img, dep in pairs:
        ip, dp = folder / img, folder / dep
        if not ip.exists() or not dp.exists():
            # Sequences are often shared as a subset of frames with the full lists kept.
            missing += 1
            continue
        items.append(RGBDItem(ip, dp, scene, scale, None, None, _is_rendered(folder.name)))
    if not items:
        raise DataError(f"{folder}: none of the {len(pairs)} listed colour/depth pairs exists on disk")
    if missing:
        logger.info("%s: %d of %d listed pairs have files missing; skipped", folder, missing, len(pairs))
    return items


def load_tum(folder: PathLike, *, scene: str | None = None, scale: float = TUM_SCALE,
             max_difference: float = 0.02, use_associations: bool = True, step: int = 1,
             limit: int | None = None, size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    """TUM RGB-D layout: pairs from ``associations.txt`` or nearest timestamps within ``max_difference`` s."""
    items = find_tum(folder, scene=scene, scale=scale, max_difference=max_difference,
                     use_associations=use_associations)
    return read_items(_subsample(items, step, limit), size)


# ---------------------------------------------------------------------------- colour/depth folders
def find_pair_folder(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE,
                     color_dir: str = "color", depth_dir: str = "depth") -> list[RGBDItem]:
    folder = _folder(folder)
    cdir, ddir = folder / color_dir, folder / depth_dir
    if not (cdir.is_dir() and ddir.is_dir()):
        raise DataError(f"{folder} needs {color_dir}/ and {depth_dir}/ sub-folders")
    scene = scene or folder.name
    rendered = _is_rendered(folder.name)
    pairs: list[tuple[Path, Path]] = []
    match = folder / "rgbd.match"
    if match.exists():  # Open3D: "depth/N.png color/N.jpg" per line
        for n, line in enumerate(match.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise DataError(f"{match}:{n}: expected 'depth_file color_file', got {line.strip()!r}")
            pairs.append((folder / parts[1], folder / parts[0]))
    else:
        colors = {p.stem: p for p in cdir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
        for d in sorted(ddir.iterdir(), key=_natural_key):
            if d.suffix.lower() in _DEPTH_SUFFIXES and d.stem in colors:
                pairs.append((colors[d.stem], d))
    items = []
    for img, dep in pairs:
        if not img.exists() or not dep.exists():
            raise DataError(f"{folder}: file {img if not img.exists() else dep} does not exist")
        items.append(RGBDItem(img, dep, scene, scale, None, None, rendered))
    if not items:
        raise DataError(f"no colour/depth pairs with matching names in {cdir} and {ddir}")
    return items


def load_pair_folder(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE,
                     color_dir: str = "color", depth_dir: str = "depth", step: int = 1,
                     limit: int | None = None, size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    """``color/`` + ``depth/`` folders (Open3D, ICL-NUIM with ``scale=5000``, slambook PGM)."""
    items = find_pair_folder(folder, scene=scene, scale=scale, color_dir=color_dir, depth_dir=depth_dir)
    return read_items(_subsample(items, step, limit), size)


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


# ------------------------------------------------------------------------------------- NYU Depth v2
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


# ------------------------------------------------------------------------ suffix and prefix pairs
_FORMAT_HINTS = {"nyu": ("nyu-raw", None), "sun": ("sun", MM_SCALE), "tum": (None, TUM_SCALE)}


def find_suffix_pairs(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE) -> list[RGBDItem]:
    """``X.png`` + ``X_depth.png`` or ``X_color.*`` + ``X_depth.*`` (prefix NYU/SUN/TUM picks the format)."""
    folder = _folder(folder)
    items = []
    for d in sorted(folder.iterdir(), key=_natural_key):
        m = re.fullmatch(r"(.+)_depth(\.[A-Za-z]+)", d.name)
        if m is None or d.suffix.lower() not in _DEPTH_SUFFIXES:
            continue
        stem = m.group(1)
        img = next((folder / f"{stem}{tag}{s}" for tag in ("_color", "_rgb", "") for s in _IMAGE_SUFFIXES
                    if (folder / f"{stem}{tag}{s}").exists()), None)
        if img is None:
            continue
        fmt, sc = _FORMAT_HINTS.get(stem.lower(), (None, scale))
        sub = f"{scene or folder.name}/{stem}" if stem.lower() in _FORMAT_HINTS else (scene or folder.name)
        items.append(RGBDItem(img, d, sub, sc, fmt, None, _is_rendered(folder.name)))
    if not items:
        raise DataError(f"no X.png + X_depth.png pairs in {folder}")
    return items


def find_prefix_pairs(folder: PathLike, *, scene: str | None = None, scale: float = MM_SCALE) -> list[RGBDItem]:
    """``rgbN.png`` + ``depthN.png``."""
    folder = _folder(folder)
    items = []
    for d in sorted(folder.glob("depth*"), key=_natural_key):
        m = re.fullmatch(r"depth(.*)(\.[A-Za-z]+)", d.name)
        if m is None or d.suffix.lower() not in _DEPTH_SUFFIXES:
            continue
        img = next((folder / f"{p}{m.group(1)}{s}" for p in ("rgb", "color", "colour") for s in _IMAGE_SUFFIXES
                    if (folder / f"{p}{m.group(1)}{s}").exists()), None)
        if img is not None:
            items.append(RGBDItem(img, d, scene or folder.name, scale, None, None, _is_rendered(folder.name)))
    if not items:
        raise DataError(f"no rgbN.png + depthN.png pairs in {folder}")
    return items


# ------------------------------------------------------------------------------ Middlebury, Sintel
def load_middlebury(folder: PathLike, *, image: str = "im0.png", disparity: str | None = None) -> RGBDFrame:
    """A Middlebury stereo folder: ``im0.png`` + ``disp0.pfm`` (or ``disp0GT.pfm``) + ``calib.txt``.

    Depth comes from disparity (``baseline * f / (d + doffs)``, mm -> m); +inf = unknown.
    """
    folder = _folder(folder)
    if disparity is None:
        disparity = next((n for n in ("disp0.pfm", "disp0GT.pfm") if (folder / n).exists()), "disp0.pfm")
    return read_frame(folder / image, folder / disparity, calib=folder / "calib.txt", scene=folder.name)


def load_sintel(image_dir: PathLike, depth_dir: PathLike, *, scene: str | None = None, step: int = 1,
                limit: int | None = None, size: tuple[int, int] | None = None) -> list[RGBDFrame]:
    """MPI Sintel: ``<image_dir>/frame_NNNN.png`` + ``<depth_dir>/frame_NNNN.dpt`` (rendered)."""
    image_dir, depth_dir = _folder(image_dir), _folder(depth_dir)
    items = [RGBDItem(image_dir / f"{d.stem}.png", d, scene or depth_dir.name, 1.0, "dpt", None, True)
             for d in sorted(depth_dir.glob("*.dpt")) if (image_dir / f"{d.stem}.png").exists()]
    if not items:
        raise DataError(f"no frame_NNNN.png + frame_NNNN.dpt pairs in {image_dir} and {depth_dir}")
    return read_items(_subsample(items, step, limit), size)


# ----------------------------------------------------------------------------------- the walker
def _default_scale(name: str, layout_default: float) -> float:
    low = name.lower()
    return TUM_SCALE if ("tum" in low or "icl" in low) else layout_default


def find_rgbd_items(root: PathLike, *, scales: dict[str, float] | None = None,
                    include_rendered: bool = False) -> list[RGBDItem]:
    """List every frame under ``root`` (see the module docstring for the layouts), sorted by scene.

    Scene ids are folder paths relative to ``root`` (``7scenes-kitchen``,
    ``nyu/ExpNYUD_three``, ``open3d/other_formats/SUN``, ...). ``scales`` overrides the depth
    scale per folder name (e.g. ``{"ch7": 5000}``); by default 7-Scenes/colour-depth folders are
    millimetres, TUM layouts and folders named ``*tum*``/``*icl*`` are 1/5000 m, NYU exports are
    inferred. Folders that look rendered (``RENDERED_HINTS``) are skipped unless ``include_rendered``.
    """
    root = _folder(root)
    scales = dict(scales or {})
    items: list[RGBDItem] = []

    def walk(folder: Path, rel: str) -> None:
        name = folder.name
        if rel and _is_rendered(rel) and not include_rendered:
            return
        sid = rel or name  # a root that is itself one scene keeps its folder name
        sc = scales.get(rel, scales.get(name))
        consumed: set[str] = set()
        names = {p.name for p in folder.iterdir()}
        if any(n.startswith("frame-") and n.endswith(".depth.png") for n in names):
            items.extend(find_7scenes(folder, scene=sid, scale=sc or MM_SCALE))
        elif "associations.txt" in names or {"rgb.txt", "depth.txt"} <= names:
            items.extend(find_tum(folder, scene=sid, scale=sc or TUM_SCALE))
            consumed |= {"rgb", "depth"}
        elif "color" in names and "depth" in names and (folder / "color").is_dir():
            items.extend(find_pair_folder(folder, scene=sid, scale=sc or _default_scale(sid, MM_SCALE)))
            consumed |= {"color", "depth"}
        elif any(n.startswith("depth_gt_") and n.endswith(".png") for n in names):
            items.extend(find_nyu_folder(folder, scene=sid, scale=sc))
        elif any(re.fullmatch(r".+_depth\.(png|pgm|npy)", n) for n in names):
            found = find_suffix_pairs(folder, scene=sid, scale=sc or _default_scale(sid, MM_SCALE))
            items.extend(found if sc is None else [replace(it, scale=sc) for it in found])
        elif any(re.fullmatch(r"depth\d+\.(png|pgm)", n) for n in names):
            items.extend(find_prefix_pairs(folder, scene=sid, scale=sc or _default_scale(sid, MM_SCALE)))
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in consumed):
            walk(child, f"{rel}/{child.name}" if rel else child.name)

    walk(root, "")
    if include_rendered:
        return items
    return [it for it in items if not it.rendered]


def load_real_frames(root: PathLike, *, scenes: Sequence[str] | None = None, include_rendered: bool = False,
                     step: int = 1, limit_per_scene: int | None = None, size: tuple[int, int] | None = None,
                     scales: dict[str, float] | None = None) -> list[RGBDFrame]:
    """Decode the real captures under ``root`` (e.g. ``../shared/data/rgbd``); ``frame.scene`` is the scene id.

    ``scenes`` keeps only those scene ids (or their prefixes, e.g. ``"nyu"``); ``step`` and
    ``limit_per_scene`` subsample each scene; ``size = (H, W)`` resizes while loading, which
    keeps memory small (560 full-size frames take ~2.9 GB as float32).
    """
    items = find_rgbd_items(root, scales=scales, include_rendered=include_rendered)
    if scenes is not None:
        wanted = list(scenes)
        items = [it for it in items if any(it.scene == s or it.scene.startswith(s + "/") for s in wanted)]
        if not items:
            raise DataError(f"no frames of scenes {wanted} under {root}")
    by_scene: dict[str, list[RGBDItem]] = {}
    for it in items:
        by_scene.setdefault(it.scene, []).append(it)
    chosen = [it for group in by_scene.values() for it in _subsample(group, step, limit_per_scene)]
    return read_items(chosen, size, desc="real rgbd frames")


def scene_counts(frames: Iterable[RGBDFrame | RGBDItem]) -> dict[str, int]:
    """Number of frames per scene id, in first-seen order."""
    out: dict[str, int] = {}
    for f in frames:
        out[f.scene] = out.get(f.scene, 0) + 1
    return out
