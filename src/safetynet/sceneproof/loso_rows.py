"""Which frames and fakes a leave-one-source-out fold sees: the groups, the frames, the table of rows.

One folder of ``rgbd/`` = one group (:func:`group_of`); :func:`load_frames` reads every group's
frames at the working size; :func:`make_rows` turns frames into rows (features, group, fake kind,
the group that donated swapped or pasted depth, and the CNN's verdict) for :mod:`.loso`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, InputError
from .feature_model import feature_matrix
from .frames import FrameSet

log = logging.getLogger(__name__)

__all__ = ["ABSTAIN", "REAL", "RowTable", "group_of", "load_frames", "loso_splits", "make_rows"]

REAL = "real"
ABSTAIN = "not enough depth evidence"


def group_of(scene: str) -> str:
    """The LOSO group of a scene id: its top-level folder (``cleargrasp-d435-transparent/scene-080`` ->
    ``cleargrasp-d435-transparent``; the 3DMatch fragments, the ClearGrasp scenes and Open3D's
    ``other_formats`` stay with their folder)."""
    return scene.split("/", 1)[0]


def loso_splits(groups: Sequence[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(held-out group, training indices, test indices) per distinct group, in sorted order."""
    g = np.asarray(groups)
    return [(name, np.flatnonzero(g != name), np.flatnonzero(g == name)) for name in sorted(set(groups))]


# ------------------------------------------------------------------------------------------- frames
def _evenly(n: int, k: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int)) if n > k else np.arange(n)


def load_frames(root: Path, size: tuple[int, int], max_frames: int, *, sources: Sequence[str] | None = None,
                include_rendered: bool = False, scales: dict[str, float] | None = None,
                only_rendered: bool = False) -> tuple[FrameSet, list[str]]:
    """Frames under ``root`` at ``size`` (centre crop to the aspect, then resize), at most
    ``max_frames`` per group evenly spaced; returns (frames, group per frame)."""
    from ..data.rgbd import find_rgbd_items, read_item
    from ..data.rgbd.frame import resize_rgbd
    from .verify import crop_to_aspect

    items = find_rgbd_items(root, scales=scales, include_rendered=include_rendered or only_rendered)
    if only_rendered:
        items = [it for it in items if it.rendered]
    by_group: dict[str, list] = {}
    for it in items:
        by_group.setdefault(group_of(it.scene), []).append(it)
    if sources is not None:
        unknown = sorted(set(sources) - set(by_group))
        if unknown:
            raise InputError(f"unknown source(s) {', '.join(unknown)} under {root}; choose from {', '.join(sorted(by_group))}")
        by_group = {k: v for k, v in by_group.items() if k in set(sources)}
    if not by_group:
        raise DataError(f"no RGB-D frames under {root}; point --data-dir at the folder holding rgbd/")
    H, W = size
    images, depths, valids, scenes, srcs, groups = [], [], [], [], [], []
    for name in sorted(by_group):
        its = by_group[name]
        for i in _evenly(len(its), max_frames):
            f = read_item(its[i])
            img, dep, val = crop_to_aspect(f.image[None], f.depth[None], f.valid[None], W / H)
            img, dep, val = resize_rgbd(img.contiguous(), dep.contiguous(), val.contiguous(), (H, W))
            images.append(img)
            depths.append(dep)
            valids.append(val)
            scenes.append(f.scene)
            srcs.append(f.source)
            groups.append(name)
    fs = FrameSet(torch.cat(images), torch.cat(depths), torch.cat(valids), scenes, srcs)
    return fs, groups


# --------------------------------------------------------------------------------------- the table
@dataclass
class RowTable:
    """One row per judged frame: features, its group, the fake kind (``real`` for captures), the
    group the swapped depth came from (``""`` otherwise) and the CNN's verdict (``""`` if not run)."""

    X: np.ndarray
    group: np.ndarray
    kind: np.ndarray
    donor: np.ndarray
    cnn: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[RowTable]) -> RowTable:
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("X", "group", "kind", "donor", "cnn")))

    def __len__(self) -> int:
        return len(self.kind)

    def take(self, mask: np.ndarray) -> RowTable:
        return RowTable(self.X[mask], self.group[mask], self.kind[mask], self.donor[mask], self.cnn[mask])


def _swap_from_donors(fs: FrameSet, donors: FrameSet, donor_groups: Sequence[str], rng: np.random.Generator
                      ) -> tuple[FrameSet, list[str]]:
    """Each image with the depth of a random frame of another source (an adversary's real depth map)."""
    j = rng.integers(0, len(donors), size=len(fs))
    t = torch.as_tensor(j, dtype=torch.long)
    return (FrameSet(fs.image.clone(), donors.depth[t].clone(), donors.valid[t].clone(), list(fs.scenes),
                     list(fs.sources)), [donor_groups[k] for k in j])


def make_rows(fs: FrameSet, groups: Sequence[str], kinds: Sequence[str], seed: int, *, predictor: Any = None,
              bundle: Any = None, donors: tuple[FrameSet, list[str]] | None = None, as_fake: bool = False) -> RowTable:
    """Rows for ``fs`` (real, or fakes if ``as_fake``) and for every fake kind made from each group's frames.

    Fakes are made per group with a seed derived from ``seed``, the group's position and the kind,
    so a group's fakes do not depend on which other groups are loaded. ``donors`` (frames, groups)
    feed ``swap_depth``; donors of the same group are never used.
    """
    from .fakes import make_fakes
    from .verify import verify_frames

    def cnn_verdicts(f: FrameSet) -> np.ndarray:
        if bundle is None:
            return np.array([""] * len(f), dtype=object)
        return np.array([v.verdict for v in verify_frames(bundle, f)], dtype=object)

    parts = []
    names = sorted(set(groups))
    g_arr = np.asarray(groups)
    for gi, name in enumerate(names):
        sub = fs.subset(np.flatnonzero(g_arr == name))
        n = len(sub)
        base_kind = "fake" if as_fake else REAL
        parts.append(RowTable(feature_matrix(sub), np.array([name] * n, dtype=object), np.array([base_kind] * n, dtype=object),
                              np.array([""] * n, dtype=object), cnn_verdicts(sub)))
        for ki, kind in enumerate(kinds):
            kseed = int(seed) * 100003 + _stable(name) * 101 + ki
            donor = [""] * n
            if kind == "swap_depth":
                if donors is None:
                    raise InputError("swap_depth needs donor frames of other sources")
                dfs, dgroups = donors
                other = np.flatnonzero(np.asarray(dgroups) != name)
                if other.size == 0:
                    continue
                fk, donor = _swap_from_donors(sub, dfs.subset(other), [dgroups[k] for k in other],
                                              np.random.default_rng(kseed))
            else:
                opts = {"predictor": predictor} if kind == "predicted_depth" else {}
                if kind == "predicted_depth" and predictor is None:
                    continue
                if kind == "insert_region":
                    if donors is None or not (np.asarray(donors[1]) != name).any():
                        continue
                    # Paste a region of another source's frame: pair this frame with a donor frame.
                    fk, donor = _insert_from_donors(sub, donors, name, kseed)
                else:
                    img, dep, val = make_fakes(kind, sub.image, sub.depth, sub.valid, seed=kseed, **opts)
                    fk = FrameSet(img, dep, val, list(sub.scenes), list(sub.sources))
            parts.append(RowTable(feature_matrix(fk), np.array([name] * n, dtype=object), np.array([kind] * n, dtype=object),
                                  np.array(donor, dtype=object), cnn_verdicts(fk)))
    return RowTable.concat(parts)


def _insert_from_donors(sub: FrameSet, donors: tuple[FrameSet, list[str]], name: str, seed: int
                        ) -> tuple[FrameSet, list[str]]:
    """Paste a rectangle of a random frame of another source into each frame (:func:`insert_region`
    on the pair (frame, donor), whose only cross pairing is the swap)."""
    from .fakes import insert_region

    dfs, dgroups = donors
    other = np.flatnonzero(np.asarray(dgroups) != name)
    j = np.random.default_rng(seed).choice(other, size=len(sub))
    imgs, deps, vals = [], [], []
    for i in range(len(sub)):
        pair = [i, int(j[i])]
        img = torch.stack([sub.image[i], dfs.image[pair[1]]])
        dep = torch.stack([sub.depth[i], dfs.depth[pair[1]]])
        val = torch.stack([sub.valid[i], dfs.valid[pair[1]]])
        o = insert_region(img, dep, val, seed=seed * 1000 + i, groups=["ours", "donor"])
        imgs.append(o[0][0])
        deps.append(o[1][0])
        vals.append(o[2][0])
    return (FrameSet(torch.stack(imgs), torch.stack(deps), torch.stack(vals), list(sub.scenes), list(sub.sources)),
            [dgroups[int(k)] for k in j])


def _stable(name: str) -> int:
    """A small integer from a name that does not change between runs (``hash`` does)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 10007
