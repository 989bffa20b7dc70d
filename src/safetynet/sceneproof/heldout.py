"""Held-out captures (``rgbd-heldout/``): judged frame by frame through the ``verify`` pipeline, never trained or tuned on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import SceneProof
from .frames import FrameSet

__all__ = ["HELDOUT_FAKES", "judge_heldout", "load_heldout", "verdict_shares"]

HELDOUT_FAKES = ("zero_depth", "swap_depth", "shift_scale_depth", "jpeg_degrade")


def load_heldout(bundle: SceneProof, root: Path) -> FrameSet:
    from ..data.rgbd import find_rgbd_items, read_item
    from .verify import prepare_frames

    items = find_rgbd_items(root, scales={"ch7": 5000})
    frames = []
    for it in items:
        f = read_item(it)
        img, dep, val = prepare_frames(bundle, f.image[None], f.depth[None], f.valid[None])
        frames.append(FrameSet(img, dep, val, [f.scene], [f.source]))
    out = frames[0]
    for f in frames[1:]:
        out = out.concat(f)
    return out


def verdict_shares(verdicts: Sequence[Any]) -> dict[str, float]:
    n = max(len(verdicts), 1)
    names = [v.verdict for v in verdicts]
    return {"n": len(verdicts), "real": names.count("real") / n, "fake": names.count("fake") / n,
            "rejected": names.count("rejected (adversarial)") / n}


def judge_heldout(bundle: SceneProof, root: Path, seed: int) -> dict[str, Any]:
    from .frames import fake_frames
    from .verify import verify_frames

    fs = load_heldout(bundle, root)
    verdicts = verify_frames(bundle, fs)
    per_scene: dict[str, list] = {}
    for s, v in zip(fs.scenes, verdicts):
        per_scene.setdefault(s, []).append(v)
    out: dict[str, Any] = {
        "frames": len(fs), "real_frames": verdict_shares(verdicts),
        "per_scene": {s: verdict_shares(v) for s, v in per_scene.items()},
        "per_frame": [{"source": src, "verdict": v.verdict, "real_score": v.real_score,
                       "rejected_fraction": v.rejected_fraction} for src, v in zip(fs.sources, verdicts)],
        "fakes": {},
    }
    rng = np.random.default_rng(seed + 17)
    for k, kind in enumerate(HELDOUT_FAKES):
        fk, _ = fake_frames(kind, fs, seed=seed * 1000 + 900 + k, rng=rng)
        v = verdict_shares(verify_frames(bundle, fk))
        v["fake_or_rejected"] = v["fake"] + v["rejected"]
        out["fakes"][kind] = v
    return out
