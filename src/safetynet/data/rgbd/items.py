"""Where one RGB-D frame lives and how to read it (:class:`RGBDItem`), and the helpers the layout readers share.

Reading happens in two steps so that splits can be made by scene before anything is decoded:
the layout readers (:mod:`~safetynet.data.rgbd.layouts`, :mod:`~safetynet.data.rgbd.tum`,
:mod:`~safetynet.data.rgbd.nyu`, and the walker :func:`~safetynet.data.rgbd.walker.find_rgbd_items`)
list :class:`RGBDItem` (paths + how to read them) and :func:`read_item` decodes one into an
:class:`RGBDFrame`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError, InputError
from ...progress import progress
from .formats import DepthFormat, read_depth_array, read_image
from .frame import RGBDFrame, make_frame

PathLike = str | os.PathLike[str]

TUM_SCALE = 5000.0
MM_SCALE = 1000.0
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


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


__all__ = ["MM_SCALE", "RENDERED_HINTS", "TUM_SCALE", "PathLike", "RGBDItem", "read_frame", "read_intrinsics",
           "read_item", "read_items"]
