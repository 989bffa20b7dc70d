"""SafetyNet: a classifier plus RBF-SVM detectors on quantized late-layer codes, as one object.

Lu, Issaranon, Forsyth, "SafetyNet: Detecting and Rejecting Adversarial Examples Robustly",
ICCV 2017. The classifier labels an image; detectors on the binary (or quaternary) codes of
late ReLU layers decide whether to reject it. With several layers, ``rule="any"`` rejects when
any detector fires (the paper's "Det ABC")::

    net = SafetyNet(model, layers=["layer3.2.relu"], levels=2, pool=4)
    net.fit(natural_images, adversarial_images)      # tensors (N, C, H, W) in [0, 1]
    labels = net.predict(x)                          # class index, or REJECT (-1)
    out = net.classify(x)                            # logits + decisions from one forward pass
    net.save("runs/safetynet"); net = SafetyNet.load("runs/safetynet")

For adaptive (type-II) attacks, :meth:`SafetyNet.smooth_forward` gives a differentiable surrogate
of the detector score: the paper's smoothing, a sigmoid of sharpness lambda in place of the
quantizer and a widened RBF kernel. The real detector has zero gradient almost everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ._validation import check_images
from .codes import ActivationQuantizer, activations_and_logits, check_pool, pool_activation
from .detectors.ensemble import DetectorEnsemble, Rule
from .detectors.persistence import read_state, write_state
from .detectors.svm import CodeSVMDetector, detector_from_state, detector_state
from .errors import CheckpointError, InputError
from .taps import forward_with_taps, resolve_layers

#: Label returned by :meth:`SafetyNet.predict` for rejected (detected) inputs.
REJECT = -1
FORMAT = "safetynet"
FORMAT_VERSION = 1
MODEL_DIR = "model"


@dataclasses.dataclass
class Classification:
    """Result of :meth:`SafetyNet.classify` for N images."""

    logits: torch.Tensor  # (N, K) classifier outputs
    labels: torch.Tensor  # (N,) int64 argmax, REJECT (-1) where detected
    detected: np.ndarray  # (N,) bool, True = rejected as adversarial
    score: np.ndarray  # (N,) combined detector margin, > 0 = detected
    scores: dict[str, np.ndarray]  # {layer: (N,) margin}


class SafetyNet:
    """Classifier + per-layer quantizers + per-layer RBF-SVM detectors.

    Parameters
    ----------
    model : nn.Module taking [0, 1] images
    layers : layer names to tap; default the model's last late ReLU (``model.late_relus[-1]``)
    levels : 2 (binary codes) or 4 (quaternary)
    thresholds, quantiles : see :class:`safetynet.codes.ActivationQuantizer`
    pool : spatial average-pool size for conv layers (None = all units)
    rule : "any" (reject if any layer's detector fires) or "all"
    detector_params : keyword arguments for every :class:`CodeSVMDetector` (e.g. gamma, C)
    batch_size : images per forward pass
    model_config : the ``build_model`` arguments of ``model``; needed to save the model weights
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str | None = None, levels: int = 2,
                 thresholds: str | float | Sequence[float] = "quantile", quantiles: Sequence[float] | None = None,
                 pool: int | None = None, rule: str = "any", detector_params: Mapping[str, Any] | None = None,
                 batch_size: int = 256, model_config: Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch nn.Module, got {type(model).__name__}")
        if layers is None:
            late = getattr(model, "late_relus", None)
            if not late:
                raise InputError("give layers=[...]: the model has no late_relus attribute to pick a default")
            layers = [late[-1]]
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.levels = levels
        self.thresholds = thresholds
        self.quantiles = quantiles
        self.pool = check_pool(pool)
        try:
            self.rule = Rule(rule).value
        except ValueError:
            raise InputError(f"rule must be 'any' or 'all', got {rule!r}") from None
        self.detector_params = dict(detector_params or {})
        try:
            CodeSVMDetector().set_params(**self.detector_params)
        except ValueError as e:
            raise InputError(f"bad detector_params: {e}") from None
        if "levels" in self.detector_params:
            raise InputError("set levels on SafetyNet, not in detector_params")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.model_config = None if model_config is None else dict(model_config)
        ActivationQuantizer(levels, thresholds, quantiles)._check_levels()
        self.quantizers_: dict[str, ActivationQuantizer] = {}
        self.ensemble_: DetectorEnsemble | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str], **kwargs: Any) -> "SafetyNet":
        """Wrap a classifier saved by ``safetynet train`` (its config is kept, so :meth:`save` works)."""
        from .models import load_checkpoint

        model, meta = load_checkpoint(checkpoint)
        return cls(model, model_config=meta["model"], **kwargs)

    @property
    def detectors_(self) -> dict[str, CodeSVMDetector]:
        return dict(self._fitted().detectors)

    def _fitted(self) -> DetectorEnsemble:
        if self.ensemble_ is None:
            raise InputError("this SafetyNet is not fitted yet; call fit(natural_images, adversarial_images) "
                             "or SafetyNet.load(folder)")
        return self.ensemble_

    # -- fitting --------------------------------------------------------------------------------
    def _activations(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return activations_and_logits(self.model, x, self.layers, self.pool, self.batch_size)

    def fit(self, natural_images: torch.Tensor, adversarial_images: torch.Tensor) -> "SafetyNet":
        """Fit quantizers on natural activations, then one detector per layer (1 = adversarial)."""
        check_images(natural_images, "natural_images")
        check_images(adversarial_images, "adversarial_images")
        if len(natural_images) < 2 or len(adversarial_images) < 2:
            raise InputError("need at least 2 natural and 2 adversarial images to fit the detectors")
        nat, _ = self._activations(natural_images)
        adv, _ = self._activations(adversarial_images)
        y = np.r_[np.zeros(len(natural_images), np.int64), np.ones(len(adversarial_images), np.int64)]
        quantizers, detectors = {}, {}
        for n in self.layers:
            q = ActivationQuantizer(self.levels, self.thresholds, self.quantiles).fit(nat[n])
            codes = np.concatenate([q.transform(nat[n]), q.transform(adv[n])])
            detectors[n] = CodeSVMDetector(levels=self.levels, **self.detector_params).fit(codes, y)
            quantizers[n] = q
        self.quantizers_ = quantizers
        self.ensemble_ = DetectorEnsemble(detectors, self.rule)
        return self

    # -- detection ------------------------------------------------------------------------------
    def codes(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Codes ``{layer: (N, D) uint8}`` of images ``x``."""
        self._fitted()
        acts, _ = self._activations(x)
        return {n: self.quantizers_[n].transform(acts[n]) for n in self.layers}

    def classify(self, x: torch.Tensor) -> Classification:
        """Logits, labels (REJECT where detected) and detector margins from one forward pass per batch."""
        ens = self._fitted()
        acts, logits = self._activations(x)
        scores = ens.scores({n: self.quantizers_[n].transform(acts[n]) for n in self.layers})
        score = ens.combine(scores)
        detected = score > 0
        labels = logits.argmax(1)
        labels[torch.from_numpy(detected)] = REJECT
        return Classification(logits=logits, labels=labels, detected=detected, score=score, scores=scores)

    def scores(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-layer detector margins ``{layer: (N,)}``; > 0 means that layer flags the image."""
        return self.classify(x).scores

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        """Combined margin (N,): max (rule "any") or min ("all") over layers; > 0 = adversarial."""
        return self.classify(x).score

    def detect(self, x: torch.Tensor) -> np.ndarray:
        """Boolean (N,): True where SafetyNet rejects the image as adversarial."""
        return self.classify(x).detected

    def restricted(self, layers: Sequence[str]) -> SafetyNet:
        """A view of this fitted SafetyNet on ``layers`` only, rejecting when any of them fires.

        Shares the fitted quantizers and detectors (nothing is refitted): SceneProof's "Det A" is
        the fc7 view of its three-layer SafetyNet.
        """
        self._fitted()
        missing = [n for n in layers if n not in self.layers]
        if missing or not layers:
            raise InputError(f"layers {list(layers)} must be a non-empty subset of this SafetyNet's {list(self.layers)}")
        sub = SafetyNet(self.model, layers=list(layers), levels=self.levels, thresholds=self.thresholds,
                        quantiles=self.quantiles, pool=self.pool, rule="any", detector_params=self.detector_params,
                        batch_size=self.batch_size)
        sub.quantizers_ = {n: self.quantizers_[n] for n in layers}
        sub.ensemble_ = DetectorEnsemble({n: self.ensemble_.detectors[n] for n in layers}, "any")
        return sub

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (N,) int64, with :data:`REJECT` (-1) for rejected images."""
        return self.classify(x).labels

    # -- differentiable surrogate (type-II attacks) -------------------------------------------
    def smooth_forward(self, x: torch.Tensor, sharpness: float, gamma_scale: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable ``(logits (N, K), smoothed detector score (N,))`` from one forward pass.

        The paper's type-II smoothing (sec. 4): each quantizer step becomes a sigmoid of
        sharpness lambda (:meth:`ActivationQuantizer.smooth`) and the RBF is widened by using
        ``gamma * gamma_scale`` (``gamma_scale < 1`` = larger sigma, smoother gradients). The
        score approximates :meth:`decision_function` (exactly so as lambda grows with
        ``gamma_scale = 1``) and layers combine by max/min as the detectors do. Gradients flow
        to ``x``; the model is evaluated in eval mode.
        """
        ens = self._fitted()
        if not (isinstance(gamma_scale, (int, float)) and gamma_scale > 0 and math.isfinite(gamma_scale)):
            raise InputError(f"gamma_scale must be a positive finite number, got {gamma_scale!r}")
        check_images(x)
        was_training = self.model.training
        self.model.eval()
        try:
            logits, acts = forward_with_taps(self.model, x, self.layers)
        finally:
            self.model.train(was_training)
        per_layer = []
        for n in self.layers:
            det = ens.detectors[n]
            a = pool_activation(acts[n], self.pool)  # (N, D)
            c = self.quantizers_[n].smooth(a, sharpness)  # (N, D) in [0, levels-1]
            sv = torch.as_tensor(det.support_vectors_, dtype=c.dtype)  # (n_SV, D)
            dist = (c * c).sum(1, keepdim=True) + (sv * sv).sum(1)[None] - 2.0 * c @ sv.T  # (N, n_SV)
            k = torch.exp(-det.gamma_ * gamma_scale * dist.clamp_min(0))
            alpha = torch.as_tensor(det.dual_coef_[0], dtype=c.dtype)
            per_layer.append(k @ alpha + float(det.intercept_[0]))
        stack = torch.stack(per_layer)  # (layers, N)
        score = stack.amax(0) if ens.rule is Rule.ANY else stack.amin(0)
        return logits, score

    def smooth_score(self, x: torch.Tensor, sharpness: float, gamma_scale: float = 1.0) -> torch.Tensor:
        """The differentiable detector score of :meth:`smooth_forward` (N,), > 0 = adversarial."""
        return self.smooth_forward(x, sharpness, gamma_scale)[1]

    # -- persistence ----------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "levels": self.levels, "thresholds": self.thresholds,
                "quantiles": None if self.quantiles is None else list(self.quantiles), "pool": self.pool,
                "rule": self.rule, "detector_params": self.detector_params, "batch_size": self.batch_size}

    def save(self, directory: str | os.PathLike[str], save_model: bool = True) -> Path:
        """Write ``detector.safetensors`` + ``detector.json`` (+ ``model/`` weights) into ``directory``.

        With ``save_model=False`` only the detector is written and :meth:`load` needs ``model=``.
        """
        from ._io import sha256_file
        from .models import save_checkpoint

        ens = self._fitted()
        directory = Path(directory)
        config = self._config()
        try:
            json.dumps(config)
        except TypeError as e:
            raise InputError(f"SafetyNet settings must be JSON-serialisable to save: {e}") from None
        model_ref = None
        if save_model:
            if self.model_config is None:
                raise InputError("cannot save the model without model_config (the build_model arguments); "
                                 "build with SafetyNet.from_checkpoint(...), pass model_config=, or save_model=False")
            save_checkpoint(self.model, directory / MODEL_DIR, self.model_config)
            model_ref = {"checkpoint": MODEL_DIR, "sha256": sha256_file(directory / MODEL_DIR / "model.safetensors"),
                         "config": self.model_config}
        arrays: dict[str, np.ndarray] = {}
        layer_meta = []
        for i, n in enumerate(self.layers):
            a, m = detector_state(ens.detectors[n], prefix=f"{i}.")
            arrays.update(a)
            arrays[f"{i}.thresholds"] = self.quantizers_[n].get_state()["thresholds"]
            layer_meta.append({"layer": n, **m})
        write_state(directory, arrays, {"config": config, "model": model_ref, "detectors": layer_meta},
                    FORMAT, FORMAT_VERSION)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: nn.Module | None = None) -> "SafetyNet":
        """Rebuild a saved SafetyNet; ``model`` overrides (or replaces a missing) saved model."""
        from ._io import sha256_file
        from .models import load_checkpoint

        directory = Path(directory)
        arrays, meta = read_state(directory, FORMAT, FORMAT_VERSION)
        try:
            cfg, model_ref, layer_meta = dict(meta["config"]), meta["model"], list(meta["detectors"])
            layers = list(cfg["layers"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{directory}/detector.json lacks field {e}; re-save the SafetyNet") from None
        if len(layer_meta) != len(layers) or [m.get("layer") for m in layer_meta] != layers:
            raise CheckpointError(f"{directory}/detector.json: detector list does not match layers {layers}")
        model_config = None
        if model is None:
            if not model_ref:
                raise CheckpointError(f"{directory} was saved without a model; pass model= to SafetyNet.load")
            weights = directory / model_ref["checkpoint"] / "model.safetensors"
            if not weights.is_file() or sha256_file(weights) != model_ref.get("sha256"):
                raise CheckpointError(f"{weights} is missing or differs from the model saved with this detector")
            model, model_meta = load_checkpoint(directory / model_ref["checkpoint"])
            model_config = model_meta["model"]
        try:
            net = cls(model, layers=layers, levels=cfg["levels"], thresholds=cfg["thresholds"],
                      quantiles=cfg["quantiles"], pool=cfg["pool"], rule=cfg["rule"],
                      detector_params=cfg["detector_params"], batch_size=cfg["batch_size"], model_config=model_config)
        except KeyError as e:
            raise CheckpointError(f"{directory}/detector.json lacks setting {e}; re-save the SafetyNet") from None
        except InputError as e:
            raise CheckpointError(f"{directory}/detector.json does not fit the model: {e}") from None
        expected = set()
        quantizers, detectors = {}, {}
        for i, (n, m) in enumerate(zip(layers, layer_meta)):
            expected |= {f"{i}.{k}" for k in ("support_vectors", "dual_coef", "intercept", "classes", "n_support",
                                               "thresholds")}
            det = detector_from_state(arrays, m, prefix=f"{i}.", where=f"{directory} layer {n}")
            t = arrays.get(f"{i}.thresholds")
            if t is None or t.dtype != np.float32 or t.shape != (det.levels_ - 1, det.n_features_in_):
                raise CheckpointError(f"{directory}: thresholds for layer {n} are missing or do not match its detector")
            try:
                quantizers[n] = ActivationQuantizer.from_thresholds(t, det.levels_)
            except InputError as e:
                raise CheckpointError(f"{directory}: bad thresholds for layer {n}: {e}") from None
            quantizers[n].thresholds, quantizers[n].quantiles = net.thresholds, net.quantiles
            detectors[n] = det
        if set(arrays) != expected:
            extra = sorted(set(arrays) ^ expected)
            raise CheckpointError(f"{directory}: unexpected arrays {extra} in detector.safetensors")
        net.quantizers_ = quantizers
        net.ensemble_ = DetectorEnsemble(detectors, net.rule)
        return net

    def __repr__(self) -> str:
        state = "fitted" if self.ensemble_ is not None else "not fitted"
        return (f"SafetyNet(layers={list(self.layers)}, levels={self.levels}, pool={self.pool}, "
                f"rule={self.rule!r}, {state})")


__all__ = ["Classification", "REJECT", "SafetyNet"]
