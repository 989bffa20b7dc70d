"""SceneProof's patch sampling: labelled training, validation and evaluation patches cut from frame sets.

* training patches (:func:`training_patches`) are random crops of augmented real frames and of
  fakes made from the same (augmented) frames, so appearance alone never tells the class;
  frames are drawn with :func:`~safetynet.sceneproof.frames.frame_weights`;
* validation and evaluation patches (:func:`grid_patch_set`, :func:`evaluation_patches`) tile
  the frames on the fixed grid of :func:`~safetynet.sceneproof.patches.patch_positions`;
* ``insert_region`` patches are kept only where they contain the pasted rectangle's border
  (:func:`seam_ok`; elsewhere the patch is an untouched real patch, or real content of the
  donor frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.rgbd.frame import resize_rgbd
from ..errors import InputError
from .frames import FrameSet, fake_frames, frame_weights
from .labels import FAKE, REAL
from .patches import augment_real, patch_positions, sensor_holes, to_network_input

DEFAULT_PATCH = 64
DEFAULT_STRIDE = 32


def seam_ok(box: Sequence[int], y: int, x: int, size: int, margin: int = 6) -> bool:
    """Does the ``size`` patch at (y, x) contain the pasted rectangle's border with ``margin`` px each side?

    ``box`` is a row of :func:`~safetynet.sceneproof.fakes.insert_region_boxes` (donor, sy, sx, dy, dx, h, w).
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


__all__ = ["DEFAULT_PATCH", "DEFAULT_STRIDE", "PatchSet", "evaluation_patches", "grid_patch_set", "grid_patches",
           "random_patches", "seam_ok", "training_patches"]
