"""SceneProof's frame sets: the split by scene, depth registration per rig, per-source weights, and
fakes made from whole frames.

Data (see ``docs/sceneproof-data.md``):

* frames are resized to the working resolution (default :data:`DEFAULT_SIZE`, 120x160) and
  split **by scene** (:func:`split_by_scene`): whole sources go to validation (bundles trained
  before 2026-12 also sent the last part of long sequences, behind a guard band);
* each rig's depth is registered to its images (:func:`register_scenes`), estimated on its
  training frames only;
* real patches come from real captures and from the simulator's *sensor* frames (a simulated
  capture of a synthetic room counts as a real capture: its depth is what a Kinect would measure
  of that room); the simulator's noise-free renders are the test-only ``rendered`` fake;
* every frame source is weighted by the square root of its frame count
  (:func:`frame_weights`), so 7-Scenes (500 frames) does not drown the one-frame scenes;
* the pairing fakes (``swap_depth``, ``insert_region``) pair only frames of different scenes
  (:func:`pairing_chunks`, :func:`fake_frames`).

Patches are cut from these frames by :mod:`safetynet.sceneproof.sampling`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.rgbd.frame import RGBDFrame, stack_frames
from ..errors import InputError
from .fakes import insert_region_boxes, make_fakes

log = logging.getLogger(__name__)

DEFAULT_SIZE = (120, 160)


def source_of(scene: str) -> str:
    """The data source a scene belongs to, for weighting: every simulated room is one source, ``sim``."""
    return "sim" if scene.startswith("sim-") else scene


def frame_weights(scenes: Sequence[str], power: float = 0.5) -> np.ndarray:
    """Sampling probability per frame: each source gets weight ``count ** power``, shared by its frames."""
    src = [source_of(s) for s in scenes]
    counts: dict[str, int] = {}
    for s in src:
        counts[s] = counts.get(s, 0) + 1
    w = np.array([counts[s] ** power / counts[s] for s in src], dtype=np.float64)
    return w / w.sum()


def split_by_scene(frames: Sequence[RGBDFrame], val_scenes: Sequence[str], val_tail: float = 0.2,
                   guard: float = 0.04, long_sequence: int = 100, *, subscenes: bool = True
                   ) -> tuple[list[RGBDFrame], list[RGBDFrame]]:
    """Split frames into (train, validation) by scene.

    Scenes named in ``val_scenes`` go to validation whole; a name also covers the scenes under it
    (``"nyu"`` holds out ``nyu/ExpNYUD_joint`` too), so naming a source's top-level folder keeps
    the whole source on one side (the rule of the shared data: one folder = one group; ``subscenes=False``
    matches scene ids exactly, as bundles trained before 2026-12 did). A scene with at least
    ``long_sequence`` frames (a video, e.g. 7-Scenes) gives its last ``val_tail`` share of frames
    (in capture order) to validation and drops the ``guard`` share before it, so that no
    validation view is a near-duplicate of a training view.
    """
    if not 0 <= val_tail < 1 or not 0 <= guard < 1 or val_tail + guard >= 1:
        raise InputError(f"need 0 <= val_tail, guard and val_tail + guard < 1, got {val_tail}, {guard}")
    by_scene: dict[str, list[RGBDFrame]] = {}
    for f in frames:
        by_scene.setdefault(f.scene, []).append(f)
    train: list[RGBDFrame] = []
    val: list[RGBDFrame] = []
    for scene, group in by_scene.items():
        if any(scene == v or (subscenes and scene.startswith(v + "/")) for v in val_scenes):
            val += group
        elif len(group) >= long_sequence and val_tail > 0:
            group = sorted(group, key=lambda f: f.source)
            n_val = round(val_tail * len(group))
            n_guard = round(guard * len(group))
            train += group[:len(group) - n_val - n_guard]
            val += group[len(group) - n_val:]
        else:
            train += group
    if not train or not val:
        raise InputError(f"the split left {len(train)} training and {len(val)} validation frames; "
                         "both need frames (check val_scenes against the scene ids)")
    return train, val


@dataclass
class FrameSet:
    """Frames of one size as tensors, with a scene id per frame."""

    image: torch.Tensor  # (B, 3, H, W) float [0, 1]
    depth: torch.Tensor  # (B, 1, H, W) metres
    valid: torch.Tensor  # (B, 1, H, W) bool
    scenes: list[str]
    sources: list[str] = field(default_factory=list)

    @classmethod
    def from_frames(cls, frames: Sequence[RGBDFrame]) -> FrameSet:
        image, depth, valid = stack_frames(frames)
        return cls(image, depth, valid, [f.scene for f in frames], [f.source for f in frames])

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def subset(self, idx: Sequence[int] | np.ndarray) -> FrameSet:
        idx = [int(i) for i in idx]
        t = torch.tensor(idx, dtype=torch.long)
        return FrameSet(self.image[t], self.depth[t], self.valid[t], [self.scenes[i] for i in idx],
                        [self.sources[i] for i in idx] if self.sources else [])

    def concat(self, other: FrameSet) -> FrameSet:
        return FrameSet(torch.cat([self.image, other.image]), torch.cat([self.depth, other.depth]),
                        torch.cat([self.valid, other.valid]), self.scenes + other.scenes,
                        (self.sources or [""] * len(self)) + (other.sources or [""] * len(other)))


def balanced_subset(scenes: Sequence[str], rng: np.random.Generator, ratio: float = 1.0) -> np.ndarray:
    """Indices where the largest scene has at most ``ratio`` times as many frames as all others together.

    Pairing fakes with ``groups=`` needs ``ratio <= 1`` (no scene holds more than half).
    """
    scenes = list(scenes)
    counts: dict[str, int] = {}
    for s in scenes:
        counts[s] = counts.get(s, 0) + 1
    big = max(counts, key=counts.get)
    rest = len(scenes) - counts[big]
    idx = np.arange(len(scenes))
    cap = max(1, math.floor(ratio * rest))
    if counts[big] <= cap:
        return idx
    if rest == 0:
        raise InputError(f"all frames come from scene {big!r}; pairing fakes (swap_depth, insert_region) "
                         "needs frames of at least two scenes")
    big_idx = idx[np.array([s == big for s in scenes])]
    keep = rng.choice(big_idx, size=cap, replace=False)
    return np.sort(np.concatenate([idx[np.array([s != big for s in scenes])], keep]))


def pairing_chunks(scenes: Sequence[str], rng: np.random.Generator, size: int = 8) -> list[np.ndarray]:
    """Split frame indices into small batches that the pairing fakes can always pair across scenes.

    :func:`~safetynet.sceneproof.fakes.derangement` finds a cross-scene pairing by rejection
    sampling, which works only when no scene is large within a batch (its success probability
    falls like ``exp(-sum(n_scene^2) / n)``). Each chunk holds at most ``size // 2 - 1`` frames
    of the scene with the most frames left and one frame from each of several other scenes;
    frames left when only one scene remains are dropped.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(scenes):
        groups.setdefault(s, []).append(i)
    for g in groups.values():
        rng.shuffle(g)
    big_cap = max(1, size // 2 - 1)
    chunks: list[np.ndarray] = []
    while sum(1 for g in groups.values() if g) >= 2:
        order = sorted((k for k, g in groups.items() if g), key=lambda k: -len(groups[k]))
        others = [groups[k].pop() for k in order[1:size - min(big_cap, len(groups[order[0]])) + 1]]
        # The largest scene may fill at most half of the chunk (else no cross-scene pairing exists).
        n_big = min(big_cap, len(groups[order[0]]), len(others))
        chunk = [groups[order[0]].pop() for _ in range(n_big)] + others
        chunks.append(np.asarray(chunk, dtype=np.int64))
    return chunks


def fake_frames(kind: str, frames: FrameSet, seed: int, predictor: Callable | None = None,
                rng: np.random.Generator | None = None) -> tuple[FrameSet, torch.Tensor | None]:
    """Apply fake ``kind`` to ``frames``; returns (fake frames, insert boxes (B, 7) or None).

    Pairing kinds (``swap_depth``, ``insert_region``) run on the chunks of
    :func:`pairing_chunks` and pair only frames of different scenes; some frames of a dominant
    scene may be left out. The scene ids of the result are those of the frames the fakes were
    made from.
    """
    rng = rng or np.random.default_rng(seed)
    opts: dict[str, Any] = {}
    if kind == "predicted_depth":
        if predictor is None:
            raise InputError("the predicted_depth fake needs a depth predictor (train_depth_regressor)")
        opts["predictor"] = predictor
    if kind not in ("swap_depth", "insert_region"):
        image, depth, valid = make_fakes(kind, frames.image, frames.depth, frames.valid, seed=seed, **opts)
        return FrameSet(image, depth, valid, list(frames.scenes), list(frames.sources)), None
    chunks = pairing_chunks(frames.scenes, rng)
    if not chunks:
        raise InputError(f"{kind} pairs frames of different scenes, but all frames come from one scene")
    parts, boxes = [], []
    H, W = frames.image.shape[-2:]
    for c, idx in enumerate(chunks):
        base = frames.subset(idx)
        cseed = int(seed) * 1000 + c
        parts.append((base, make_fakes(kind, base.image, base.depth, base.valid, seed=cseed, groups=base.scenes)))
        if kind == "insert_region":
            boxes.append(insert_region_boxes(len(base), H, W, seed=cseed, groups=base.scenes))
    out = FrameSet(torch.cat([p[1][0] for p in parts]), torch.cat([p[1][1] for p in parts]),
                   torch.cat([p[1][2] for p in parts]), [s for p in parts for s in p[0].scenes],
                   [s for p in parts for s in p[0].sources])
    return out, (torch.cat(boxes) if boxes else None)


def register_scenes(train: list, val: list, *, min_frames: int = 20, min_gain: float = 0.1,
                    saved: dict[str, dict[str, Any]] | None = None) -> tuple[list, list, dict[str, dict[str, Any]]]:
    """Register each scene's depth to its images (:func:`~safetynet.data.rgbd.registration.calibrate_registration`),
    estimated on the scene's *training* frames only and applied to its training and validation
    frames alike (same rig). Returns (train, val, {scene: registration and verdict}).

    ``saved``: a previous run's report (``{scene: {"scale", "dy", "dx", ..., "verdict"}}``); its
    "applied" registrations are used as they are and nothing is estimated.
    """
    from dataclasses import fields as dataclass_fields, replace

    from ..data.rgbd.frame import stack_frames
    from ..data.rgbd.registration import Registration, apply_registration, calibrate_registration

    report: dict[str, dict[str, Any]] = {}
    regs = {}
    if saved is not None:
        fields = {f.name for f in dataclass_fields(Registration)}
        for scene, entry in saved.items():
            if not isinstance(entry, dict) or not fields <= set(entry):
                raise InputError(f"saved registration of {scene!r} lacks {sorted(fields - set(entry or {}))}; "
                                 "retrain the bundle with `safetynet sceneproof train`")
            report[scene] = dict(entry)
            if entry.get("verdict") == "applied":
                regs[scene] = Registration(**{k: entry[k] for k in fields})
    else:
        by_scene: dict[str, list] = {}
        for f in train:
            by_scene.setdefault(f.scene, []).append(f)
        for scene, group in by_scene.items():
            reg, verdict = calibrate_registration(*stack_frames(group), min_gain=min_gain, min_frames=min_frames)
            if len(group) >= min_frames:
                report[scene] = {**reg.to_dict(), "verdict": verdict}
                log.info("registration of %s: %s %s", scene, verdict, reg.to_dict())
            if verdict == "applied":
                regs[scene] = reg

    def apply(frames: list) -> list:
        out = []
        for f in frames:
            if f.scene in regs:
                d, v = apply_registration(f.depth[None], f.valid[None], regs[f.scene])
                f = replace(f, depth=d[0], valid=v[0])
            out.append(f)
        return out

    return apply(train), apply(val), report


__all__ = ["DEFAULT_SIZE", "FrameSet", "balanced_subset", "fake_frames", "frame_weights", "pairing_chunks", "register_scenes",
           "source_of", "split_by_scene"]
