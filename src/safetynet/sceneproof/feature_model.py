"""The sensor-agnostic SceneProof model that ``verify`` uses by default: camera-independent frame
features (:mod:`.features` + :mod:`.alignment_features`) fed to gradient-boosted trees.

Stored without pickle in a folder: ``trees.npz`` (the trees as plain arrays, :mod:`.tree_export`,
read with ``allow_pickle=False``) and ``model.json`` (format, feature names, threshold, abstention
rule, working size, provenance, and the sha256 of ``trees.npz``, checked before the arrays are
read). It judges whole frames, so it has no patches: a frame is **real** when P(fake) is at most
the threshold chosen on grouped out-of-fold predictions of the training sources, **fake**
otherwise, and **not enough depth evidence** (reported as fake) when less than ``min_valid`` of
its pixels have depth.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._io import save_npz_atomic, sha256_file, write_json_atomic
from ..errors import CheckpointError, InputError
from .bundle import read_model_json
from .alignment_features import ALIGNMENT_NAMES, alignment_features
from .features import FEATURE_NAMES, frame_features
from .tree_export import TREE_ARRAYS, TreeEnsemble, export_hgb

__all__ = ["ALL_FEATURE_NAMES", "FEATURE_MODEL_FORMAT", "FEATURE_MODEL_JSON", "FeatureVerifier", "all_features", "feature_matrix",
           "default_feature_model_dir", "is_feature_model"]

FEATURE_MODEL_FORMAT = "safetynet-sceneproof-features"
FEATURE_MODEL_VERSION = 1
FEATURE_MODEL_JSON = "model.json"
TREES_NPZ = "trees.npz"

#: Every feature the model reads, in column order (``valid_share`` first: the abstention rule reads it).
ALL_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + ALIGNMENT_NAMES


def all_features(image: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The :data:`ALL_FEATURE_NAMES` vector of one frame: image (3,H,W) in [0,1], depth (H,W) metres, valid (H,W)."""
    return np.concatenate([frame_features(image, depth, valid), alignment_features(image, depth, valid)])


def feature_matrix(frames: Any) -> np.ndarray:
    """The (N, len(ALL_FEATURE_NAMES)) rows of a :class:`~safetynet.sceneproof.frames.FrameSet`."""
    img, dep, val = frames.image.numpy(), frames.depth.numpy(), frames.valid.numpy()
    return np.stack([all_features(img[i], dep[i, 0], val[i, 0]) for i in range(len(img))])


def default_feature_model_dir() -> Path:
    """The shipped feature model inside the installed package."""
    return Path(__file__).resolve().parent.parent / "weights" / "sceneproof-features"


def is_feature_model(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a feature model (``model.json`` of this format)."""
    path = Path(directory) / FEATURE_MODEL_JSON
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FEATURE_MODEL_FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


@dataclass
class FeatureVerifier:
    """A loaded feature model: ``p_fake(X)`` on :data:`ALL_FEATURE_NAMES` rows, ``judge`` per frame."""

    trees: TreeEnsemble
    settings: dict[str, Any]  # threshold, min_valid, size (H, W), provenance
    directory: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """Working resolution (H, W) the features are computed at."""
        return tuple(int(v) for v in self.settings["size"])  # type: ignore[return-value]

    @property
    def threshold(self) -> float:
        return float(self.settings["threshold"])

    @property
    def min_valid(self) -> float:
        return float(self.settings["min_valid"])

    def enough_depth(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X)[:, ALL_FEATURE_NAMES.index("valid_share")] >= self.min_valid

    def p_fake(self, X: np.ndarray) -> np.ndarray:
        """P(fake) per row; 1.0 where the frame has too little depth (it abstains)."""
        X = np.asarray(X, dtype=np.float64)
        p = np.ones(len(X))
        m = self.enough_depth(X)
        if m.any():
            p[m] = self.trees.p_class1(X[m])
        return p

    # -- persistence ------------------------------------------------------------------------------
    @staticmethod
    def save(directory: str | os.PathLike[str], clf: object, settings: dict[str, Any]) -> Path:
        """Write a fitted binary ``HistGradientBoostingClassifier`` (class 1 = fake) and ``settings``
        (needs ``threshold``, ``min_valid``, ``size``) as a model folder; both files atomically."""
        need = [k for k in ("threshold", "min_valid", "size") if k not in settings]
        if need:
            raise InputError(f"feature model settings lack {', '.join(need)}")
        directory = Path(directory)
        arrays = export_hgb(clf)
        save_npz_atomic(directory / TREES_NPZ, **arrays)
        doc = {"format": FEATURE_MODEL_FORMAT, "format_version": FEATURE_MODEL_VERSION,
               "feature_names": list(ALL_FEATURE_NAMES), **settings,
               "trees_sha256": sha256_file(directory / TREES_NPZ)}
        write_json_atomic(directory / FEATURE_MODEL_JSON, doc)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> FeatureVerifier:
        """Read a model folder (default: the shipped one); raises CheckpointError when it is unusable."""
        directory = Path(directory) if directory is not None else default_feature_model_dir()
        path = directory / FEATURE_MODEL_JSON
        doc = read_model_json(path, FEATURE_MODEL_FORMAT, FEATURE_MODEL_VERSION, "SceneProof feature model",
                              "safetynet sceneproof fit-features")
        if doc.get("feature_names") != list(ALL_FEATURE_NAMES):
            raise CheckpointError(f"{path} was fitted on other features than this safetynet computes; refit it with "
                                  "'safetynet sceneproof fit-features'")
        for k in ("threshold", "min_valid"):
            v = doc.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise CheckpointError(f"{path}: {k} must be a number, got {v!r}")
        npz = directory / TREES_NPZ
        if not npz.is_file():
            raise CheckpointError(f"{npz} not found; the feature model folder is incomplete")
        if sha256_file(npz) != doc.get("trees_sha256"):
            raise CheckpointError(f"{npz} does not match the sha256 in {path}; the model file was changed or damaged")
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in TREE_ARRAYS if k in z.files}
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {npz}: {e}") from None
        settings = {k: v for k, v in doc.items() if k != "feature_names"}
        return cls(TreeEnsemble(arrays, len(ALL_FEATURE_NAMES)), settings, directory)
