"""The saved SceneProof bundle: classifier + SafetyNet detectors A/B/C with calibrated thresholds.

The bundle (:class:`SceneProof`) is a folder without pickle: ``sceneproof.json`` (settings,
thresholds, provenance), ``classifier/`` (safetensors + config), ``detectors/`` (SafetyNet
detector state), ``metzen/`` (baseline subnetwork), ``surrogate/`` (a second classifier for
transfer attacks) and ``depth_regressor.safetensors`` (makes the ``predicted_depth`` fake).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import write_json_atomic
from ..errors import CheckpointError, InputError
from .labels import DETECTOR_LAYERS, REAL

BUNDLE_FORMAT = "safetynet-sceneproof"
BUNDLE_VERSION = 1
BUNDLE_JSON = "sceneproof.json"


def default_model_dir() -> Path:
    """The shipped bundle inside the installed package."""
    return Path(__file__).resolve().parent.parent / "weights" / "sceneproof"


def bundle_sha256(directory: str | os.PathLike[str] | None = None) -> str:
    """One sha256 for a whole bundle folder (default: the shipped one), files in byte order of their paths.

    It is the sha256 of the ``sha256sum`` manifest of the folder, so anyone can recompute it:
    ``cd BUNDLE && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum``.
    """
    from .._io import folder_sha256

    root = Path(directory) if directory is not None else default_model_dir()
    if not any(p.is_file() for p in root.rglob("*")):
        raise CheckpointError(f"{root} holds no files; it is not a SceneProof bundle")
    return folder_sha256(root)


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
        settings = read_model_json(path, BUNDLE_FORMAT, BUNDLE_VERSION, "SceneProof bundle", "safetynet sceneproof train")
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


def read_model_json(path: Path, fmt: str, version: int, what: str, made_by: str) -> dict[str, Any]:
    """The settings of a model folder's JSON file (without ``format`` / ``format_version``), checked to be
    ``fmt`` at ``version``; any problem is one CheckpointError naming the file and the fix."""
    if not path.is_file():
        raise CheckpointError(f"{path} not found; --model must be a folder written by '{made_by}' "
                              "(or omit it to use the shipped model)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt {what} settings {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CheckpointError(f"{path} is not a {what} (format {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"{path} is not a {what}")
    if doc.get("format_version") != version:
        raise CheckpointError(f"{path} has format version {doc.get('format_version')!r}; this safetynet reads {version}")
    return {k: v for k, v in doc.items() if k not in ("format", "format_version")}


def _jsonable(obj: Any) -> Any:
    from ..evaluation.report import to_jsonable

    return to_jsonable(obj)


__all__ = ["BUNDLE_JSON", "PatchAnalysis", "SceneProof", "ThresholdedDetector", "bundle_sha256", "default_model_dir"]
