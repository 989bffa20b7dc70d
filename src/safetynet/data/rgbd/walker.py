"""The real-capture walker: find every RGB-D frame under a folder, whatever its layout, with scene ids.

``find_rgbd_items(root)`` lists :class:`~safetynet.data.rgbd.items.RGBDItem` (paths + how to
read them, nothing decoded) and ``load_real_frames(root)`` also decodes them, so that splits can
be made by scene before anything is read.

Layouts recognised by ``find_rgbd_items`` (each folder is checked in this order, then its
remaining sub-folders are walked):

* 7-Scenes: ``frame-NNNNNN.color.{jpg,png}`` + ``frame-NNNNNN.depth.png`` (mm; 65535 = none);
* TUM RGB-D: ``associations.txt`` or ``rgb.txt`` + ``depth.txt`` (value / 5000);
* colour/depth folders (Open3D, ICL-NUIM, slambook): ``color/N.*`` + ``depth/N.{png,pgm}``,
  paired by Open3D's ``rgbd.match`` when present, else by file stem;
* NYU Depth v2 exports: ``NNNNNN.png`` + ``depth_gt_NNNNNN.png`` (scale inferred, see
  :func:`~safetynet.data.rgbd.nyu.infer_depth_scale`);
* suffix pairs: ``X.png`` + ``X_depth.png`` or ``X_color.*`` + ``X_depth.*``; the prefixes
  ``NYU``/``SUN``/``TUM`` select the raw NYU, SUN RGB-D and TUM conventions (Open3D's
  ``other_formats``);
* prefix pairs: ``rgbN.png`` + ``depthN.png``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from ...errors import DataError
from .frame import RGBDFrame
from .items import MM_SCALE, TUM_SCALE, PathLike, RGBDItem, _folder, _is_rendered, _subsample, read_items
from .layouts import find_7scenes, find_pair_folder, find_prefix_pairs, find_suffix_pairs
from .nyu import find_nyu_folder
from .tum import find_tum


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


__all__ = ["find_rgbd_items", "load_real_frames", "scene_counts"]
