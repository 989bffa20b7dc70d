"""SceneProof as an evaluation :class:`~safetynet.evaluation.task.Task`: RGB-D patches, depth-only threat model.

The robustness job and ``sceneproof evaluate``'s Table 4 attack SceneProof through the same engine
as CIFAR-10; this module supplies what is SceneProof's own:

* the data: patches of the bundle's *validation* frames (never its training frames, never
  held-out captures), real and the four training fake kinds, cut on the bundle's grid; ``n``
  attacked patches drawn stratified (half real, the rest spread over the fake kinds), ``n_fit``
  others for the attacker's own surrogate detectors;
* the threat model: only the depth channel may change (:func:`~.attacks.depth_mask`);
  "true" is a real capture (the paper's F→T / T→F);
* the defences: the bundle's *calibrated* detectors (:class:`BundleDetector`), not refitted:
  Subnet Det (its Metzen subnetwork on fc7), Det A (fc7) and Det ABC (fc7, fc6, pool5, any);
* the transfer surrogate shipped with the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..evaluation.defence import Defence
from ..evaluation.task import Task
from .attacks import depth_mask
from .bundle import SceneProof, ThresholdedDetector, default_model_dir
from .frames import FrameSet
from .labels import DETECTOR_LAYERS, REAL
from .sampling import PatchSet, evaluation_patches

__all__ = ["EPS", "BundleDetector", "bundle_defences", "sceneproof_task", "stratified_patches", "validation_patches"]

#: Budgets on the encoded depth channel (the bundle's own detector-training attack uses 0.03).
EPS = {"linf": [0.015, 0.03, 0.06], "l2": [0.5, 1.0, 2.0]}


class BundleDetector(ThresholdedDetector):
    """A SceneProof bundle's calibrated detector(s) with the differentiable surrogate the adaptive attacks need.

    ``detector_score(sharpness, gamma_scale)`` is the paper's smoothed score of the SafetyNet
    view on the chosen layers (sigmoid quantizer of sharpness lambda, RBF gamma scaled), shifted
    by the calibrated thresholds; for ``"M"`` the Metzen subnetwork's logit minus its threshold.
    """

    @property
    def smoothable(self) -> bool:
        return self.letters != "M"

    def __repr__(self) -> str:
        st = self.bundle.settings
        th = {"M": st.get("metzen_threshold")} if self.letters == "M" else {ch: self.bundle.thresholds[ch]
                                                                            for ch in self.letters}
        return f"BundleDetector({self.letters!r}, calibrated thresholds {th})"

    def safetynet_view(self) -> tuple[Any, list[float]] | None:
        """The SafetyNet on these detectors' layers and their calibrated thresholds (None for the Metzen "M")."""
        if self.letters == "M":
            return None
        layers = [DETECTOR_LAYERS[ch] for ch in self.letters]
        return self.bundle.net.restricted(layers), [self.bundle.thresholds[ch] for ch in self.letters]

    def detector_score(self, sharpness: float, gamma_scale: float) -> Any:
        from ..attacks.shifted_score import ShiftedScore
        from ..attacks.detector_scores import MetzenScore, SmoothScore

        bundle = self.bundle
        if self.letters == "M":
            if bundle.metzen is None:
                raise InputError("this SceneProof bundle has no Metzen detector")
            return ShiftedScore(MetzenScore(bundle.metzen), [bundle.settings["metzen_threshold"]])
        layers = [DETECTOR_LAYERS[ch] for ch in self.letters]
        inner = SmoothScore(bundle.net.restricted(layers), sharpness=sharpness, gamma_scale=gamma_scale)
        return ShiftedScore(inner, [bundle.thresholds[ch] for ch in self.letters])


def bundle_defences(bundle: SceneProof, batch_size: int = 256) -> dict[str, Defence]:
    """Table 4's columns for a bundle: Ori, Subnet Det (if the bundle has one), Det A, Det ABC."""
    model = bundle.model.eval()
    out = {"ori": Defence("ori", model, None, title="Ori", batch_size=batch_size)}
    if bundle.metzen is not None:
        out["subnet"] = Defence("subnet", model, BundleDetector(bundle, "M"), title="Subnet Det", batch_size=batch_size)
    out["det_a"] = Defence("det_a", model, BundleDetector(bundle, "A"), title="Det A", batch_size=batch_size)
    out["det_ens"] = Defence("det_ens", model, BundleDetector(bundle, "ABC"), title="Det ABC", batch_size=batch_size)
    return out


def stratified_patches(ps: PatchSet, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``ps``: half real, the other half spread evenly over the fake kinds (sorted)."""
    real = np.flatnonzero(ps.kind == "real")
    pick = [rng.choice(real, size=min(n // 2, len(real)), replace=False)]
    kinds = [k for k in np.unique(ps.kind) if k != "real"]
    per = max(1, (n - n // 2) // max(len(kinds), 1))
    for k in kinds:
        idx = np.flatnonzero(ps.kind == k)
        pick.append(rng.choice(idx, size=min(per, len(idx)), replace=False))
    return np.sort(np.concatenate(pick))


def sceneproof_task(bundle: SceneProof | str | None = None, *, data_dir: str | None = None, n: int = 100,
                    n_fit: int = 1000, seed: int = 0, batch_size: int = 256,
                    patches: tuple[FrameSet, PatchSet] | None = None) -> Task:
    """The SceneProof task of a bundle (a :class:`SceneProof`, a folder, or None for the shipped one).

    ``patches``: the bundle's validation ``(frames, patches)`` if the caller already built them
    with :func:`validation_patches` (``sceneproof evaluate`` does; rebuilding takes minutes).
    """
    if not isinstance(bundle, SceneProof):
        bundle = SceneProof.load(bundle)
    if patches is None:
        val_fs, _, _, nat = validation_patches(bundle, data_dir)  # the patches `sceneproof evaluate` reads
    else:
        val_fs, nat = patches
    rng = np.random.default_rng(seed)
    test = stratified_patches(nat, n, rng)
    rest = np.setdiff1d(np.arange(len(nat)), test)
    if n_fit > len(rest):
        raise InputError(f"n_fit={n_fit} exceeds the {len(rest)} validation patches left after the n attacked ones")
    fit = np.sort(rng.choice(rest, size=n_fit, replace=False))
    ti, fi = torch.as_tensor(test), torch.as_tensor(fit)
    counts = {k: int((nat.kind[test] == k).sum()) for k in dict.fromkeys(nat.kind.tolist())}
    prov = {"fit": f"{n_fit} validation patches ({len(val_fs)} validation frames)",
            "test": f"{len(test)} validation patches, stratified: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
            "mask": "the depth channel", "kinds": nat.kind[test].tolist()}
    source = str(bundle.directory or default_model_dir())
    return Task(name="sceneproof", model=bundle.model.eval(), model_source=f"SceneProof bundle {source}",
                fit_x=nat.images(fi), fit_y=nat.y[fi], test_x=nat.images(ti), test_y=nat.y[ti], provenance=prov,
                arch="sceneproof", mask=depth_mask(4), positive_class=REAL,
                defences=bundle_defences(bundle, batch_size),
                surrogates={} if bundle.surrogate is None else {"bundle-surrogate": bundle.surrogate.eval()},
                eps={k: list(v) for k, v in EPS.items()})


def _frames_from_config(bundle: SceneProof, data_dir: str | None) -> tuple[FrameSet, dict[str, Any]]:
    """Rebuild the validation frames of the bundle's training run (and check they match)."""
    from .train import SceneProofConfig, load_frames

    saved = dict(bundle.settings.get("training", {}).get("config", {}))
    if not saved:
        raise InputError("the bundle has no training config; cannot rebuild its validation split")
    cfg = SceneProofConfig.from_saved(saved)
    cfg.data_dir = data_dir if data_dir is not None else None
    # Registration as the bundle's training applied it (recorded in the bundle), not re-estimated.
    saved_reg = bundle.settings["training"]["data"].get("registration") if cfg.register else None
    _, val_fs, info = load_frames(cfg, validation_only=True, registration=saved_reg)
    expected = bundle.settings["training"]["data"].get("real_val_sources")
    if expected is not None and info.get("real_val_sources") is not None:
        got = [Path(s.split("|")[0]).name for s in info["real_val_sources"]]
        want = [Path(s.split("|")[0]).name for s in expected]
        if got != want:
            raise InputError("the real validation frames differ from those the bundle was calibrated on; "
                             "point --data-dir at the data it was trained with")
    return val_fs, {"train_config": saved, **info}


def validation_patches(bundle: SceneProof, data_dir: str | None
                       ) -> tuple[FrameSet, dict[str, Any], dict[str, tuple[PatchSet, np.ndarray, FrameSet]], PatchSet]:
    """The bundle's validation frames and their grid patches (real + the training fake kinds).

    Returns ``(frames, provenance, {kind: (patches, frame index, frames)}, all patches)``; the
    same patches for every job that reads them (seeded by the bundle's training seed).
    """
    from .train import TRAIN_KINDS

    val_fs, val_info = _frames_from_config(bundle, data_dir)
    seed = int(bundle.settings["training"]["config"]["seed"]) + 7
    sets = evaluation_patches(val_fs, TRAIN_KINDS, seed=seed, patch=bundle.patch, stride=bundle.stride,
                              predictor=bundle.depth_regressor)
    return val_fs, val_info, sets, PatchSet.concat([v[0] for v in sets.values()])
