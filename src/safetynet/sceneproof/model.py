"""SceneProof's classifier, its training/validation patches, and the saved bundle (classifier + detectors).

The classifier is a small VGG (:class:`~safetynet.models.vgg.CifarVGG`) on 4-channel 64x64
patches: RGB plus the inverse-depth channel of :func:`~safetynet.sceneproof.patches.to_network_input`.
Label :data:`REAL` (1) is a real capture, :data:`FAKE` (0) anything else. SafetyNet detectors
A (``fc7``), B (``fc6``) and C (``pool5``) sit on its late ReLU layers.

Data (see ``docs/sceneproof-data.md``):

* frames are resized to the working resolution (default 120x160) and split **by scene**
  (:func:`split_by_scene`): whole scenes, plus the last part of long sequences (7-Scenes) behind
  a guard band of frames, go to validation;
* real patches come from real captures and from the simulator's *sensor* frames (a simulated
  capture of a synthetic room counts as a real capture: its depth is what a Kinect would measure
  of that room); the simulator's noise-free renders are the test-only ``rendered`` fake;
* every frame source is weighted by the square root of its frame count
  (:func:`frame_weights`), so 7-Scenes (500 frames) does not drown the one-frame scenes;
* fake patches are cut from fakes of the same (augmented) frames, so appearance alone never
  tells the class; ``insert_region`` patches are kept only where they contain the pasted
  rectangle's border (elsewhere the patch is an untouched real patch, or real content of the
  donor frame).

The bundle (:class:`SceneProof`) is a folder without pickle: ``sceneproof.json`` (settings,
thresholds, provenance), ``classifier/`` (safetensors + config), ``detectors/`` (SafetyNet
detector state), ``metzen/`` (baseline subnetwork), ``surrogate/`` (a second classifier for
transfer attacks) and ``depth_regressor.safetensors`` (makes the ``predicted_depth`` fake).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import write_json_atomic
from .._schedule import one_cycle
from ..data.rgbd.frame import RGBDFrame, resize_rgbd, stack_frames
from ..errors import CheckpointError, InputError
from .fakes import insert_region_boxes, make_fakes
from .patches import augment_real, patch_positions, sensor_holes, to_network_input

REAL, FAKE = 1, 0
CLASSES = ("fake", "real")
#: Detector letters of the paper's SceneProof tables and the layers they read.
DETECTOR_LAYERS = {"A": "fc7", "B": "fc6", "C": "pool5"}
BUNDLE_FORMAT = "safetynet-sceneproof"
BUNDLE_VERSION = 1
BUNDLE_JSON = "sceneproof.json"
DEFAULT_SIZE = (120, 160)
DEFAULT_PATCH = 64
DEFAULT_STRIDE = 32


def default_model_dir() -> Path:
    """The shipped bundle inside the installed package."""
    return Path(__file__).resolve().parent.parent / "weights" / "sceneproof"


# ------------------------------------------------------------------------------------------ model
def model_config(width: int = 16, hidden: int = 128, mean: Sequence[float] = (0.45, 0.42, 0.39, 0.15),
                 std: Sequence[float] = (0.25, 0.25, 0.25, 0.1), blocks: Sequence[int] = (1, 1, 2, 2, 2),
                 dropout: float = 0.0) -> dict[str, Any]:
    """``build_model`` arguments of a SceneProof classifier (stored in the checkpoint's config.json)."""
    return {"arch": "vgg", "num_classes": 2, "in_channels": 4, "width": int(width), "hidden": int(hidden),
            "blocks": [int(b) for b in blocks], "dropout": float(dropout), "pool_size": 1,
            "mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def build_sceneproof_model(config: Mapping[str, Any], seed: int | None = None) -> nn.Module:
    """A 4-channel VGG from :func:`model_config`; ``seed`` fixes the initialisation (global RNG restored)."""
    from ..models import build_model

    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(int(seed))
        return build_model(**dict(config))


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of patches (N, 4, H, W) (std floored so normalisation stays finite)."""
    x = x.float()
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]


# ------------------------------------------------------------------------------------------- data
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
                   guard: float = 0.04, long_sequence: int = 100) -> tuple[list[RGBDFrame], list[RGBDFrame]]:
    """Split frames into (train, validation) by scene.

    Scenes named in ``val_scenes`` go to validation whole. A scene with at least
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
        if scene in val_scenes:
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


def seam_ok(box: Sequence[int], y: int, x: int, size: int, margin: int = 6) -> bool:
    """Does the ``size`` patch at (y, x) contain the pasted rectangle's border with ``margin`` px each side?

    ``box`` is a row of :func:`insert_region_boxes` (donor, sy, sx, dy, dx, h, w).
    """
    _, _, _, by, bx, h, w = (int(v) for v in box)
    # Overlap of the patch with the rectangle, and of the patch with its outside.
    iy0, iy1 = max(y, by), min(y + size, by + h)
    ix0, ix1 = max(x, bx), min(x + size, bx + w)
    if iy1 - iy0 < margin or ix1 - ix0 < margin:
        return False  # (almost) no pasted content in the patch
    inside_all = by <= y + margin and y + size - margin <= by + h and bx <= x + margin and x + size - margin <= bx + w
    return not inside_all


def random_patches(x: torch.Tensor, n: int, size: int, rng: np.random.Generator, weights: np.ndarray | None = None,
                   boxes: torch.Tensor | None = None, max_tries: int = 50) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` random ``size`` crops of frames ``x`` (B, C, H, W), frames drawn with ``weights``.

    With ``boxes`` only crops containing the inserted rectangle's border are kept (frames where
    none is found in ``max_tries`` are skipped). Returns (patches (n', C, s, s), frame index).
    """
    B, _, H, W = x.shape
    if size > H or size > W:
        raise InputError(f"patch size {size} exceeds the frames {H}x{W}")
    frames = rng.choice(B, size=n, replace=True, p=weights)
    out, idx = [], []
    for b in frames:
        for _ in range(max_tries if boxes is not None else 1):
            y = int(rng.integers(0, H - size + 1))
            xx = int(rng.integers(0, W - size + 1))
            if boxes is None or seam_ok(boxes[b].tolist(), y, xx, size):
                out.append(x[b, :, y:y + size, xx:xx + size])
                idx.append(int(b))
                break
    if not out:
        return x.new_zeros((0, x.shape[1], size, size)), np.zeros(0, dtype=np.int64)
    return torch.stack(out), np.asarray(idx, dtype=np.int64)


def grid_patches(x: torch.Tensor, size: int, stride: int, boxes: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, np.ndarray, list[tuple[int, int]]]:
    """Tile frames (B, C, H, W) on the fixed grid of :func:`patch_positions`.

    Returns (patches (B*P', C, s, s), frame index per patch, the grid positions). With ``boxes``,
    only patches containing the inserted rectangle's border are returned.
    """
    B, _, H, W = x.shape
    pos = patch_positions(H, W, size, stride)
    out, idx = [], []
    for b in range(B):
        for y, xx in pos:
            if boxes is None or seam_ok(boxes[b].tolist(), y, xx, size):
                out.append(x[b, :, y:y + size, xx:xx + size])
                idx.append(b)
    if not out:
        return x.new_zeros((0, x.shape[1], size, size)), np.zeros(0, dtype=np.int64), pos
    return torch.stack(out), np.asarray(idx, dtype=np.int64), pos


@dataclass
class PatchSet:
    """Network-input patches (stored as float16 to halve memory) with labels and provenance."""

    x: torch.Tensor  # (N, 4, s, s) float16 in [0, 1]
    y: torch.Tensor  # (N,) int64, REAL = 1, FAKE = 0
    kind: np.ndarray  # (N,) str: "real" or the fake kind
    scene: np.ndarray  # (N,) str: scene of the frame the patch comes from

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def images(self, idx: Any = slice(None)) -> torch.Tensor:
        return self.x[idx].float()

    def select(self, mask: np.ndarray | torch.Tensor) -> PatchSet:
        m = torch.as_tensor(np.asarray(mask))
        if m.dtype == torch.bool:
            m = m.nonzero().squeeze(1)
        mi = m.numpy()
        return PatchSet(self.x[m], self.y[m], self.kind[mi], self.scene[mi])

    @staticmethod
    def concat(parts: Sequence[PatchSet]) -> PatchSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise InputError("no patches were made; check the frames and the patch size")
        return PatchSet(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]),
                        np.concatenate([p.kind for p in parts]), np.concatenate([p.scene for p in parts]))

    def counts(self) -> dict[str, int]:
        kinds, n = np.unique(self.kind, return_counts=True)
        return {str(k): int(c) for k, c in zip(kinds, n)}


def _patchset(x: torch.Tensor, label: int, kind: str, scenes: Sequence[str], idx: np.ndarray) -> PatchSet:
    return PatchSet(x.to(torch.float16), torch.full((len(x),), label, dtype=torch.long),
                    np.array([kind] * len(x), dtype=object), np.array([scenes[i] for i in idx], dtype=object))


def training_patches(frames: FrameSet, n_real: int, n_fake: int, kinds: Sequence[str], *, seed: int,
                     patch: int = DEFAULT_PATCH, rounds: int = 2, predictor: Callable | None = None,
                     holes: float = 0.0, zoom: float = 0.0, depth_jitter: float = 0.0) -> PatchSet:
    """Random patches of augmented real frames and of fakes made from them (see the module docstring).

    Each of ``rounds`` passes augments every frame (flips, photometric jitter), cuts
    ``n_real / rounds`` real patches and ``n_fake / (rounds * len(kinds))`` patches of each fake
    kind; frames are drawn with :func:`frame_weights`. ``holes`` > 0 adds sensor-style missing
    depth (:func:`~safetynet.sceneproof.patches.sensor_holes`) to that share of the frames of
    *both* classes, after the fakes are made, so missing readings carry no label.

    Camera variation, label-neutral because it is applied to the frames *before* the fakes are
    made from them: ``zoom`` > 0 shrinks round ``r``'s frames by ``1 - zoom * r / (rounds - 1)``
    (a wider field of view, so apparent size and distance decouple from one camera's focal
    length; only ever downsampling, which adds no resampling artefacts to depth), and
    ``depth_jitter`` multiplies each frame's depth by a factor in ``[1/(1+j), 1+j]`` (scenes at
    other distances; keep it below the ``shift_scale_depth`` fake's smallest factor, 1/0.85).
    """
    if not 0 <= zoom < 1 or not 0 <= depth_jitter < 0.5:
        raise InputError(f"need 0 <= zoom < 1 and 0 <= depth_jitter < 0.5, got {zoom}, {depth_jitter}")
    if not kinds:
        raise InputError("give at least one fake kind")
    rng = np.random.default_rng(seed)
    parts: list[PatchSet] = []
    per_real = max(1, n_real // rounds)
    per_fake = max(1, n_fake // (rounds * len(kinds)))
    for r in range(rounds):
        image, depth, valid = augment_real(frames.image, frames.depth, frames.valid, seed=seed * 1000 + r)
        if zoom > 0 and rounds > 1 and r > 0:
            f = 1 - zoom * r / (rounds - 1)
            H, W = image.shape[-2:]
            size = (max(patch, round(H * f)), max(patch, round(W * f)))
            image, depth, valid = resize_rgbd(image, depth, valid, size)
        if depth_jitter > 0:
            g = torch.Generator().manual_seed(seed * 1000 + 700 + r)
            k = torch.exp((2 * torch.rand(len(depth), generator=g) - 1) * float(np.log1p(depth_jitter)))
            depth = depth * k.view(-1, 1, 1, 1)
        aug = FrameSet(image, depth, valid, frames.scenes, frames.sources)
        if holes > 0:
            depth, valid = sensor_holes(depth, valid, seed=seed * 1000 + 500 + r, p=holes)
        x = to_network_input(image, depth, valid)
        p, idx = random_patches(x, per_real, patch, rng, frame_weights(aug.scenes))
        parts.append(_patchset(p, REAL, "real", aug.scenes, idx))
        del x
        for k, kind in enumerate(kinds):
            fk, boxes = fake_frames(kind, aug, seed=seed * 1000 + 100 * r + k, predictor=predictor, rng=rng)
            fdepth, fvalid = fk.depth, fk.valid
            if holes > 0:
                fdepth, fvalid = sensor_holes(fdepth, fvalid, seed=seed * 1000 + 600 + 100 * r + k, p=holes)
            xf = to_network_input(fk.image, fdepth, fvalid)
            p, idx = random_patches(xf, per_fake, patch, rng, frame_weights(fk.scenes), boxes=boxes)
            parts.append(_patchset(p, FAKE, kind, fk.scenes, idx))
    return PatchSet.concat(parts)


def grid_patch_set(frames: FrameSet, label: int, kind: str, *, patch: int = DEFAULT_PATCH,
                   stride: int = DEFAULT_STRIDE, boxes: torch.Tensor | None = None) -> tuple[PatchSet, np.ndarray]:
    """All grid patches of frames (no augmentation), for validation and evaluation; also returns frame index."""
    x = to_network_input(frames.image, frames.depth, frames.valid)
    p, idx, _ = grid_patches(x, patch, stride, boxes)
    return _patchset(p, label, kind, frames.scenes, idx), idx


def evaluation_patches(frames: FrameSet, kinds: Sequence[str], *, seed: int, patch: int = DEFAULT_PATCH,
                       stride: int = DEFAULT_STRIDE, predictor: Callable | None = None,
                       include_real: bool = True) -> dict[str, tuple[PatchSet, np.ndarray, FrameSet]]:
    """Grid patches of the real frames and of each fake kind: ``{kind: (patches, frame index, frames)}``."""
    out: dict[str, tuple[PatchSet, np.ndarray, FrameSet]] = {}
    rng = np.random.default_rng(seed)
    if include_real:
        ps, idx = grid_patch_set(frames, REAL, "real", patch=patch, stride=stride)
        out["real"] = (ps, idx, frames)
    for k, kind in enumerate(kinds):
        fk, boxes = fake_frames(kind, frames, seed=seed * 1000 + k, predictor=predictor, rng=rng)
        ps, idx = grid_patch_set(fk, FAKE, kind, patch=patch, stride=stride, boxes=boxes)
        out[kind] = (ps, idx, fk)
    return out


# ------------------------------------------------------------------------------------ classifier fit
def train_classifier(model: nn.Module, data: PatchSet, *, epochs: int, seed: int, batch_size: int = 64,
                     lr: float = 2e-3, weight_decay: float = 5e-4, optimizer: str = "adamw",
                     log: Callable[[str], None] | None = None,
                     on_epoch: Callable[[int, nn.Module], None] | None = None) -> list[float]:
    """AdamW (or SGD with Nesterov momentum) on a one-cycle schedule, cross-entropy, random horizontal flips.

    Returns the mean training loss per epoch; the model is left in eval mode. ``on_epoch(epoch,
    model)`` is called after every epoch (e.g. to log validation accuracy).
    """
    if len(data) < 2:
        raise InputError("need at least 2 training patches")
    if optimizer not in ("adamw", "sgd"):
        raise InputError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    gen = torch.Generator().manual_seed(int(seed))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = (torch.optim.AdamW(groups, lr=lr) if optimizer == "adamw"
           else torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True))
    steps = epochs * -(-len(data) // batch_size)
    sched = one_cycle(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    history = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = data.images(idx)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
        if log is not None:
            log(f"classifier epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch, model)
            model.train()
    model.eval()
    return history


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """P(real) per patch (N,), float32 (eval mode, no gradient)."""
    was = model.training
    model.eval()
    try:
        parts = [torch.softmax(model(x[i:i + batch_size].float()), 1)[:, REAL] for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0)


# --------------------------------------------------------------------------------------- bundle
@dataclass
class PatchAnalysis:
    """Classifier and detector outputs for N patches."""

    p_real: np.ndarray  # (N,) P(real)
    pred: np.ndarray  # (N,) predicted class, REAL = 1 / FAKE = 0
    scores: dict[str, np.ndarray]  # {"A"/"B"/"C": (N,) detector margin minus its calibrated threshold}
    metzen: np.ndarray | None = None  # (N,) Metzen logit minus its threshold

    def flags(self, letters: str) -> np.ndarray:
        """True where any of the detectors named by ``letters`` (e.g. "A", "AB", "ABC") fires."""
        out = np.zeros(len(self.p_real), dtype=bool)
        for ch in letters:
            out |= self.scores[ch] > 0
        return out

    def all_flags(self, letters: str) -> np.ndarray:
        """True where every detector named by ``letters`` fires (e.g. B and A)."""
        out = np.ones(len(self.p_real), dtype=bool)
        for ch in letters:
            out &= self.scores[ch] > 0
        return out


class ThresholdedDetector:
    """Detectors of a :class:`SceneProof` with calibrated thresholds, seen as ``detect(images) -> bool``.

    ``letters`` picks the detectors ("A" = fc7, "ABC" = any of the three); ``"M"`` is the Metzen
    subnetwork. This is what :class:`~safetynet.attacks.undetected.Undetected` asks.
    """

    def __init__(self, bundle: SceneProof, letters: str) -> None:
        self.bundle = bundle
        self.letters = letters

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        a = self.bundle.analyze(x, metzen="M" in self.letters)
        parts = [a.scores[ch] for ch in self.letters if ch != "M"]
        if "M" in self.letters:
            parts.append(a.metzen)
        return np.max(np.stack(parts), axis=0)

    def detect(self, x: torch.Tensor) -> np.ndarray:
        return self.decision_function(x) > 0

    def __repr__(self) -> str:
        return f"ThresholdedDetector({self.letters!r})"


class SceneProof:
    """A trained SceneProof: classifier, SafetyNet detectors A/B/C with thresholds, settings.

    ``settings`` holds ``size`` (H, W working resolution), ``patch``, ``stride``, ``thresholds``
    ({"A", "B", "C"} margins above which a detector fires), ``metzen_threshold``,
    ``reject_fraction`` and ``real_threshold`` (frame decision, see
    :mod:`safetynet.sceneproof.verify`), plus provenance.
    """

    def __init__(self, model: nn.Module, net: Any, settings: Mapping[str, Any], model_config: Mapping[str, Any],
                 metzen: Any = None, surrogate: nn.Module | None = None, depth_regressor: nn.Module | None = None,
                 directory: Path | None = None) -> None:
        self.model = model.eval()
        self.net = net
        self.settings = dict(settings)
        self.model_config = dict(model_config)
        self.metzen = metzen
        self.surrogate = surrogate
        self.depth_regressor = depth_regressor
        self.directory = directory

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.settings["size"]
        return int(h), int(w)

    @property
    def patch(self) -> int:
        return int(self.settings["patch"])

    @property
    def stride(self) -> int:
        return int(self.settings["stride"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.settings["thresholds"].items()}

    def analyze(self, x: torch.Tensor, metzen: bool = False) -> PatchAnalysis:
        """Classifier probabilities and thresholded detector margins for patches (N, 4, s, s)."""
        x = x.float()
        out = self.net.classify(x)
        p = torch.softmax(out.logits.float(), 1)[:, REAL].numpy()
        th = self.thresholds
        scores = {ch: np.asarray(out.scores[layer], dtype=np.float64) - th[ch] for ch, layer in DETECTOR_LAYERS.items()}
        m = None
        if metzen:
            if self.metzen is None:
                raise InputError("this SceneProof bundle has no Metzen detector")
            m = np.asarray(self.metzen.decision_function(x), dtype=np.float64) - float(self.settings["metzen_threshold"])
        return PatchAnalysis(p_real=p, pred=(p > 0.5).astype(np.int64), scores=scores, metzen=m)

    def detector(self, letters: str) -> ThresholdedDetector:
        bad = set(letters) - set(DETECTOR_LAYERS) - {"M"}
        if not letters or bad:
            raise InputError(f"detector letters must be from A, B, C, M, got {letters!r}")
        return ThresholdedDetector(self, letters)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the bundle folder (see the module docstring); every file is written atomically."""
        from ..models import save_checkpoint
        from .depth_regressor import save_depth_regressor

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.model, directory / "classifier", self.model_config)
        self.net.save(directory / "detectors", save_model=False)
        if self.metzen is not None:
            self.metzen.save(directory / "metzen")
        if self.surrogate is not None:
            save_checkpoint(self.surrogate, directory / "surrogate", self.settings["surrogate_config"])
        if self.depth_regressor is not None:
            save_depth_regressor(self.depth_regressor, directory / "depth_regressor.safetensors")
        doc = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, **self.settings}
        write_json_atomic(directory / BUNDLE_JSON, _jsonable(doc))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> SceneProof:
        """Read a bundle folder (default: the shipped one); raises CheckpointError when it is unusable."""
        from ..detectors.metzen import MetzenDetector
        from ..models import load_checkpoint
        from ..safetynet import SafetyNet
        from .depth_regressor import load_depth_regressor

        directory = Path(directory) if directory is not None else default_model_dir()
        path = directory / BUNDLE_JSON
        if not path.is_file():
            raise CheckpointError(f"{path} not found; --model must be a folder written by "
                                  "'safetynet sceneproof train' (or omit it to use the shipped model)")
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"corrupt SceneProof settings {path}: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise CheckpointError(f"{path} is not a SceneProof bundle (format {doc.get('format')!r})"
                                  if isinstance(doc, dict) else f"{path} is not a SceneProof bundle")
        if doc.get("format_version") != BUNDLE_VERSION:
            raise CheckpointError(f"{path} has format version {doc.get('format_version')!r}; this safetynet reads "
                                  f"{BUNDLE_VERSION}")
        settings = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
        need = ("size", "patch", "stride", "thresholds", "reject_fraction", "real_threshold")
        missing = [k for k in need if k not in settings]
        if missing or set(settings.get("thresholds", {})) != set(DETECTOR_LAYERS):
            raise CheckpointError(f"{path} lacks settings {missing or ['thresholds A, B, C']}; retrain the bundle")
        for k, v in settings["thresholds"].items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
                raise CheckpointError(f"{path}: threshold {k} must be a number, got {v!r}")
        model, meta = load_checkpoint(directory / "classifier")
        net = SafetyNet.load(directory / "detectors", model=model)
        if list(net.layers) != list(DETECTOR_LAYERS.values()):
            raise CheckpointError(f"{directory / 'detectors'} holds layers {list(net.layers)}, expected "
                                  f"{list(DETECTOR_LAYERS.values())}")
        metzen = MetzenDetector.load(directory / "metzen", model) if (directory / "metzen").is_dir() else None
        surrogate = load_checkpoint(directory / "surrogate")[0] if (directory / "surrogate").is_dir() else None
        reg_path = directory / "depth_regressor.safetensors"
        regressor = load_depth_regressor(reg_path) if reg_path.is_file() else None
        return cls(model, net, settings, meta["model"], metzen, surrogate, regressor, directory)


def _jsonable(obj: Any) -> Any:
    from ..evaluation.report import to_jsonable

    return to_jsonable(obj)


__all__ = [
    "BUNDLE_JSON",
    "CLASSES",
    "DEFAULT_PATCH",
    "DEFAULT_SIZE",
    "DEFAULT_STRIDE",
    "DETECTOR_LAYERS",
    "FAKE",
    "REAL",
    "FrameSet",
    "PatchAnalysis",
    "PatchSet",
    "SceneProof",
    "ThresholdedDetector",
    "balanced_subset",
    "build_sceneproof_model",
    "channel_stats",
    "default_model_dir",
    "evaluation_patches",
    "fake_frames",
    "frame_weights",
    "grid_patch_set",
    "grid_patches",
    "model_config",
    "pairing_chunks",
    "predict_proba",
    "random_patches",
    "seam_ok",
    "source_of",
    "split_by_scene",
    "train_classifier",
    "training_patches",
]
