"""TUM RGB-D layout: ``associations.txt`` or ``rgb.txt`` + ``depth.txt`` (depth value / 5000 = metres)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import DataError
from .frame import RGBDFrame
from .items import TUM_SCALE, PathLike, RGBDItem, _folder, _is_rendered, _subsample, read_items

logger = logging.getLogger(__name__)


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


__all__ = ["associate_timestamps", "find_tum", "load_tum", "read_tum_list"]
