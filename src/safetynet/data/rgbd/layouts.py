"""Readers of the RGB-D layouts that pair colour and depth files by name.

* 7-Scenes: ``frame-NNNNNN.color.{jpg,png}`` + ``frame-NNNNNN.depth.png`` (mm; 65535 = none);
* colour/depth folders (Open3D, ICL-NUIM, slambook): ``color/N.*`` + ``depth/N.{png,pgm}``,
  paired by Open3D's ``rgbd.match`` when present, else by file stem;
* suffix pairs: ``X.png`` + ``X_depth.png`` or ``X_color.*`` + ``X_depth.*``; the prefixes
  ``NYU``/``SUN``/``TUM`` select the raw NYU, SUN RGB-D and TUM conventions (Open3D's
  ``other_formats``);
* prefix pairs: ``rgbN.png`` + ``depthN.png``;
* Middlebury stereo folders and MPI Sintel (rendered).

TUM RGB-D and NYU Depth v2 have their own modules (:mod:`~safetynet.data.rgbd.tum`,
:mod:`~safetynet.data.rgbd.nyu`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import DataError
from .frame import RGBDFrame
from .items import (_DEPTH_SUFFIXES, _IMAGE_SUFFIXES, MM_SCALE, TUM_SCALE, PathLike, RGBDItem, _folder, _is_rendered,
                    _natural_key, _subsample, read_frame, read_intrinsics, read_items)


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


__all__ = ["find_7scenes", "find_pair_folder", "find_prefix_pairs", "find_suffix_pairs", "load_7scenes",
           "load_middlebury", "load_pair_folder", "load_sintel"]
