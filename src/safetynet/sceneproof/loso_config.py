"""The configuration of ``safetynet sceneproof loso`` (cheap to import: no torch, no scikit-learn)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..cli_config import setting
from ..errors import InputError

__all__ = ["FitFeaturesConfig", "LOSO_TRAIN_KINDS", "LOSO_UNFAMILIAR_KINDS", "LosoConfig"]

#: Fakes the feature model is trained on (made from the training sources' frames). Phase 2 moved
#: jpeg_degrade and insert_region here (unfamiliar in phase 1, caught 16 % and 12 %): they are now
#: reported as familiar.
LOSO_TRAIN_KINDS = ("swap_depth", "shift_scale_depth", "predicted_depth", "screen_photo", "luminance_depth", "rendered",
                    "down_up_sample", "jpeg_degrade", "insert_region")
#: Fakes never shown in training ("unfamiliar", like the paper's Table 3), reported separately; the
#: rendered and estimated folders of rgbd-fakes/ are unfamiliar too (reporting only).
LOSO_UNFAMILIAR_KINDS = ("flat_print", "zero_depth")


@dataclass
class LosoConfig:
    out: str = setting("sceneproof-loso", "output folder for report.md and results.json")
    data_dir: str | None = setting(None, "folder holding rgbd/, rgbd-fakes/ and rgbd-heldout/ (default $SAFETYNET_DATA "
                                         "or ../shared/data)")
    seed: int = setting(0, "seeds frame subsampling, the fakes and the classifier")
    sources: list[str] | None = setting(None, "real sources (top-level folders of rgbd/) to use; default: all of them")
    max_frames: int = setting(24, "frames per source at most, evenly spaced in capture order (7-Scenes has 500 "
                                  "near-duplicates)")
    height: int = setting(120, "working resolution: frames are centre-cropped to 4:3 and resized to HEIGHT x WIDTH_PX")
    width_px: int = setting(160, "working resolution: width in pixels")
    train_kinds: list[str] = setting(help="fake kinds the model is trained on", factory=lambda: list(LOSO_TRAIN_KINDS))
    unfamiliar_kinds: list[str] = setting(help="fake kinds kept out of training and reported separately",
                                          factory=lambda: list(LOSO_UNFAMILIAR_KINDS))
    min_valid: float = setting(0.05, "abstain ('not enough depth evidence', counted as rejected) below this share of "
                                     "valid depth pixels; fixed in advance, not tuned")
    inner_folds: int = setting(5, "grouped folds over the training sources that choose the threshold")
    max_iter: int = setting(200, "boosting iterations of the feature classifier")
    cnn: bool = setting(True, "also judge every frame with the shipped CNN bundle (the paper's row)")
    model: str | None = setting(None, "CNN bundle folder for the comparison row and the predicted_depth fake "
                                      "(default: the shipped one)")
    reporting: bool = setting(True, "also train on all of rgbd/ and report on rgbd-heldout/ and rgbd-fakes/")

    def validate(self) -> None:
        """Refuse settings that cannot run, before anything is read or written."""
        from .fakes import ADVERSARY_FAKES, FAKES

        for name in ("max_frames", "height", "width_px", "max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if min(self.height, self.width_px) < 32:
            raise InputError(f"the working resolution must be at least 32x32, got {self.height}x{self.width_px}")
        if isinstance(self.inner_folds, bool) or not isinstance(self.inner_folds, int) or self.inner_folds < 2:
            raise InputError(f"inner_folds must be an integer >= 2, got {self.inner_folds!r}")
        if not isinstance(self.min_valid, (int, float)) or not math.isfinite(self.min_valid) or not 0 <= self.min_valid < 1:
            raise InputError(f"min_valid must be in [0, 1), got {self.min_valid!r}")
        known = set(FAKES) | set(ADVERSARY_FAKES)
        for name in ("train_kinds", "unfamiliar_kinds"):
            bad = [k for k in getattr(self, name) if k not in known]
            if bad:
                raise InputError(f"{name}: unknown fake kind(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
        if not self.train_kinds:
            raise InputError("train_kinds needs at least one fake kind to train on")
        both = set(self.train_kinds) & set(self.unfamiliar_kinds)
        if both:
            raise InputError(f"{', '.join(sorted(both))} cannot be both trained on and unfamiliar; "
                             "remove them from --unfamiliar-kinds or --train-kinds")
        if self.sources is not None and len(set(self.sources)) < 3:
            raise InputError(f"leave-one-source-out needs at least 3 sources (2 to train and validate), got {self.sources}")


@dataclass
class FitFeaturesConfig:
    """``safetynet sceneproof fit-features``: the shipped feature model, trained on all of ``rgbd/``."""

    out: str = setting("runs/sceneproof-features", "model folder to write (model.json + trees.npz)")
    data_dir: str | None = setting(None, "folder holding rgbd/ (default $SAFETYNET_DATA or ../shared/data)")
    seed: int = setting(0, "seeds frame subsampling, the fakes and the classifier")
    max_frames: int = setting(24, "frames per source at most, evenly spaced in capture order")
    height: int = setting(120, "working resolution: height in pixels")
    width_px: int = setting(160, "working resolution: width in pixels")
    train_kinds: list[str] = setting(help="fake kinds the model is trained on", factory=lambda: list(LOSO_TRAIN_KINDS))
    min_valid: float = setting(0.05, "abstain ('not enough depth evidence', judged fake) below this share of valid "
                                     "depth pixels")
    inner_folds: int = setting(5, "grouped folds over the sources that choose the threshold")
    max_iter: int = setting(200, "boosting iterations")
    model: str | None = setting(None, "CNN bundle whose depth regressor makes the predicted_depth fake (default: shipped)")

    def loso(self) -> LosoConfig:
        """The same settings as a :class:`LosoConfig` (validation and the fold logic are shared)."""
        return LosoConfig(out=self.out, data_dir=self.data_dir, seed=self.seed, max_frames=self.max_frames,
                          height=self.height, width_px=self.width_px, train_kinds=list(self.train_kinds),
                          unfamiliar_kinds=[], min_valid=self.min_valid, inner_folds=self.inner_folds,
                          max_iter=self.max_iter, cnn=False, model=self.model, reporting=False)
