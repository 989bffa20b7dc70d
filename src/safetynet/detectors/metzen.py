"""The detector subnetwork of Metzen et al., the baseline SafetyNet is compared with.

J. H. Metzen, T. Genewein, V. Fischer, B. Bischoff, "On Detecting Adversarial Perturbations",
ICLR 2017 (https://arxiv.org/abs/1702.04267). A small convolutional network is attached to an
internal stage of a *frozen* classifier and trained to tell natural from adversarial inputs
from that stage's (continuous) activations. Its topology (their Figure 1, bottom)::

    conv 3x3, 96 → [max-pool 2x2] → conv 3x3, 192 → [max-pool 2x2] → conv 3x3, 192
      → conv 1x1 → global average pooling

each 3x3 conv followed by batch normalisation and ReLU. The pools are optional and dropped
for small feature maps (for their ResNet's 8x8 stage-3 output, AD(3), the second pool is
skipped). Their head has 2 channels and a softmax; ours, as the project specifies, has one
channel whose logit goes through a sigmoid (binary cross-entropy): the same model family with
one redundant output removed. The SafetyNet paper (sec. 2.3, Table 4) uses it as "Subnet Det".

Here:

* the classifier is never updated: activations are extracted once (no gradient, eval mode) and
  the subnetwork is trained on the cached activations with Adam, which is also much faster;
* ``pools=None`` chooses 2 pools for maps of at least 16x16, 1 for at least 4x4, else 0;
* a fully connected tap (N, D) is read as a (N, D, 1, 1) map (3x3 convs then act as 1x1), so
  the subnetwork also attaches to VGG's fc6/fc7 as in the paper's SceneProof comparison;
* natural and adversarial examples are weighted equally in the loss when their counts differ;
* ``decision_function`` is the logit (higher = more adversarial, label 1), ``predict`` is
  ``logit > 0``; :meth:`MetzenDetector.score_torch` is the differentiable path for type-II attacks.

Saved as ``detector.safetensors`` (weights) + ``detector.json`` (configuration, and a sha256 of
the classifier's weights so a detector is not silently reused with another classifier).

Example::

    det = MetzenDetector(model, layer="layer3.2.relu", epochs=10).fit(x_nat, x_adv)
    scores = det.decision_function(x_test)     # numpy (N,), higher = more adversarial
    det.save("runs/metzen"); det = MetzenDetector.load("runs/metzen", model)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator
from torch import nn

from .._io import atomic_path, write_json_atomic
from .._validation import check_images
from ..errors import CheckpointError, InputError
from ..progress import progress
from ..taps import extract_activations, forward_with_taps, resolve_layers

__all__ = ["MetzenSubnetwork", "MetzenDetector", "classifier_fingerprint"]

FORMAT = "safetynet-metzen-detector"
FORMAT_VERSION = 1
WEIGHTS = "detector.safetensors"
CONFIG = "detector.json"


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


class MetzenSubnetwork(nn.Module):
    """Metzen et al.'s detector topology with a one-logit head: (N, C, H, W) → (N,) logits."""

    def __init__(self, in_channels: int, pools: int = 2, widths: tuple[int, int, int] = (96, 192, 192)) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise InputError(f"in_channels must be a positive int, got {in_channels!r}")
        if pools not in (0, 1, 2):
            raise InputError(f"pools must be 0, 1 or 2, got {pools!r}")
        self.in_channels, self.pools, self.widths = in_channels, pools, tuple(widths)
        w1, w2, w3 = self.widths
        layers: list[nn.Module] = _conv_bn_relu(in_channels, w1)
        if pools >= 1:
            layers.append(nn.MaxPool2d(2))
        layers += _conv_bn_relu(w1, w2)
        if pools >= 2:
            layers.append(nn.MaxPool2d(2))
        layers += _conv_bn_relu(w2, w3)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(w3, 1, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.head(self.features(a))  # (N, 1, H', W')
        return h.mean(dim=(1, 2, 3))  # global average pooling → (N,)


def auto_pools(height: int, width: int) -> int:
    """Pools that keep the final map at least 4x4 where possible (2 for >= 16x16, 1 for >= 4x4)."""
    side = min(height, width)
    return 2 if side >= 16 else 1 if side >= 4 else 0


def classifier_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state (names, dtypes, shapes and values of parameters and buffers)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): 0-d tensors (BN's num_batches_tracked) cannot be viewed as bytes directly.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _as_maps(a: torch.Tensor, name: str) -> torch.Tensor:
    """Activations as float32 (N, C, H, W); (N, D) fully connected taps become (N, D, 1, 1)."""
    if not isinstance(a, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(a).__name__}")
    if a.ndim == 2:
        a = a[:, :, None, None]
    if a.ndim != 4:
        raise InputError(f"{name} must have shape (N, C, H, W) or (N, D), got {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise InputError(f"{name} has 0 rows; pass at least one example")
    a = a.detach().float()
    if not torch.isfinite(a).all():
        raise InputError(f"{name} contain NaN or Inf; check the classifier and its inputs")
    return a


class MetzenDetector(BaseEstimator):
    """Metzen et al.'s detector subnetwork on one tapped layer of a frozen classifier.

    Args:
        model: the classifier (inputs in [0, 1]); never modified.
        layer: module name of the tapped layer (e.g. ``"layer3.2.relu"``, ResNet-20's stage-3 output).
        epochs, lr, batch_size, weight_decay: Adam training of the subnetwork.
        pools: max-pools in the subnetwork (0, 1, 2) or None to choose from the map size.
        widths: channels of the three 3x3 convs (Metzen et al.: 96, 192, 192).
        seed: initialisation and shuffling (the global RNG is left untouched).
        extract_batch_size: batch size for running the classifier.

    Fitted attributes: ``subnet_``, ``activation_shape_`` (C, H, W), ``pools_``,
    ``loss_history_`` (mean training loss per epoch), ``classifier_sha256_``, ``classes_``.
    """

    def __init__(self, model: nn.Module, layer: str = "layer3.2.relu", epochs: int = 10, lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 0.0, pools: int | None = None,
                 widths: tuple[int, int, int] = (96, 192, 192), seed: int = 0, extract_batch_size: int = 256) -> None:
        self.model = model
        self.layer = layer
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.pools = pools
        self.widths = widths
        self.seed = seed
        self.extract_batch_size = extract_batch_size

    # ------------------------------------------------------------------ checks
    def _validate_params(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module classifier, got {type(self.model).__name__}")
        if not isinstance(self.layer, str):
            raise InputError(f"layer must be one module name (str), got {self.layer!r}")
        resolve_layers(self.model, self.layer)
        for name in ("epochs", "batch_size", "extract_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise InputError(f"lr must be a positive number, got {self.lr!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
            raise InputError(f"weight_decay must be a number >= 0, got {wd!r}")
        if self.pools is not None and self.pools not in (0, 1, 2):
            raise InputError(f"pools must be None, 0, 1 or 2, got {self.pools!r}")
        w = self.widths
        if not isinstance(w, (tuple, list)) or len(w) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w):
            raise InputError(f"widths must be three positive ints (channels of the 3x3 convs), got {w!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an int, got {self.seed!r}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "subnet_"):
            raise InputError("This MetzenDetector instance is not fitted yet. Call 'fit' with natural and adversarial images before using it.")

    def _check_acts(self, a: torch.Tensor, name: str) -> torch.Tensor:
        a = _as_maps(a, name)
        if tuple(a.shape[1:]) != self.activation_shape_:
            raise InputError(f"{name} have shape {tuple(a.shape[1:])} per example, but the detector was fitted on "
                             f"{self.activation_shape_} from layer {self.layer!r}; use the same model and layer")
        return a

    def _activations(self, images: object, name: str) -> torch.Tensor:
        x = check_images(images, name)
        _, acts = extract_activations(self.model, x, self.layer, batch_size=self.extract_batch_size, flatten=False)
        return acts[self.layer]

    # ------------------------------------------------------------------ fit
    def fit(self, natural_images: torch.Tensor, adversarial_images: torch.Tensor) -> "MetzenDetector":
        """Train the subnetwork on the classifier's activations of natural (0) vs adversarial (1) images."""
        self._validate_params()
        nat = self._activations(natural_images, "natural_images")
        adv = self._activations(adversarial_images, "adversarial_images")
        return self.fit_activations(nat, adv)

    def fit_activations(self, natural_acts: torch.Tensor, adversarial_acts: torch.Tensor) -> "MetzenDetector":
        """Train on precomputed activations of ``layer`` (N, C, H, W) or (N, D)."""
        self._validate_params()
        nat = _as_maps(natural_acts, "natural_acts")
        adv = _as_maps(adversarial_acts, "adversarial_acts")
        if nat.shape[1:] != adv.shape[1:]:
            raise InputError(f"natural and adversarial activations differ in shape: {tuple(nat.shape[1:])} vs {tuple(adv.shape[1:])}")
        c, h, w = (int(s) for s in nat.shape[1:])
        pools = auto_pools(h, w) if self.pools is None else self.pools
        if min(h, w) < 2 ** pools:
            raise InputError(f"a {h}x{w} activation map is too small for {pools} 2x2 max-pools; use pools={auto_pools(h, w)}")
        x = torch.cat([nat, adv])  # (N, C, H, W)
        y = torch.cat([torch.zeros(len(nat)), torch.ones(len(adv))])
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(self.seed)
            subnet = MetzenSubnetwork(c, pools, tuple(self.widths))
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(subnet.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # Equal total weight for both classes, whatever their counts.
        pos_weight = torch.tensor(len(nat) / len(adv))
        history: list[float] = []
        subnet.train()
        for _ in progress(range(self.epochs), desc="metzen detector", unit="epoch"):
            perm = torch.randperm(len(x), generator=gen)
            total, seen = 0.0, 0
            for i in range(0, len(x), self.batch_size):
                idx = perm[i:i + self.batch_size]
                if len(idx) < 2:  # batch norm cannot normalise a single example
                    continue
                logits = subnet(x[idx])
                loss = F.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            history.append(total / max(seen, 1))
        subnet.eval()
        subnet.requires_grad_(False)
        self.subnet_ = subnet
        self.activation_shape_ = (c, h, w)
        self.pools_ = pools
        self.loss_history_ = history
        self.n_natural_, self.n_adversarial_ = len(nat), len(adv)
        self.classifier_sha256_ = classifier_fingerprint(self.model)
        self.classes_ = np.array([0, 1])
        return self

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def decision_function_from_activations(self, acts: torch.Tensor) -> np.ndarray:
        """Logits (N,) from precomputed activations of ``layer``; higher = more adversarial."""
        self._check_fitted()
        a = self._check_acts(acts, "activations")
        out = [self.subnet_(a[i:i + self.extract_batch_size]) for i in range(0, len(a), self.extract_batch_size)]
        return torch.cat(out).double().numpy()

    def decision_function(self, images: torch.Tensor) -> np.ndarray:
        """Logits (N,) for images in [0, 1]; higher = more adversarial."""
        self._check_fitted()
        return self.decision_function_from_activations(self._activations(images, "images"))

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """(N, 2) probabilities of [natural, adversarial]."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(images)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """1 (adversarial) where the logit is > 0, else 0."""
        return (self.decision_function(images) > 0).astype(np.int64)

    def score_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable logits (N,) of images ``x`` (classifier + subnetwork, both in eval mode).

        Gradients flow to ``x`` (for type-II attacks); no parameter is updated. The
        classifier's train/eval mode is restored afterwards.
        """
        self._check_fitted()
        x = check_images(x, "x")
        was_training = self.model.training
        self.model.eval()
        try:
            _, acts = forward_with_taps(self.model, x, self.layer)
        finally:
            self.model.train(was_training)
        return self.subnet_(self._check_acts_keep_graph(acts[self.layer]))

    def _check_acts_keep_graph(self, a: torch.Tensor) -> torch.Tensor:
        if a.ndim == 2:
            a = a[:, :, None, None]
        if tuple(a.shape[1:]) != self.activation_shape_:
            raise InputError(f"layer {self.layer!r} gives activations of shape {tuple(a.shape[1:])}, but the detector was "
                             f"fitted on {self.activation_shape_}; use the same model and input size")
        return a

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``detector.safetensors`` + ``detector.json`` into ``directory`` (atomically each)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.subnet_.state_dict().items()}
        with atomic_path(directory / WEIGHTS, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp))
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params(deep=False).items() if k != "model"},
            "activation_shape": list(self.activation_shape_),
            "pools": self.pools_,
            "widths": list(self.subnet_.widths),
            "loss_history": self.loss_history_,
            "n_natural": self.n_natural_,
            "n_adversarial": self.n_adversarial_,
            "classifier_sha256": self.classifier_sha256_,
        }
        write_json_atomic(directory / CONFIG, config)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: nn.Module, check_classifier: bool = True) -> "MetzenDetector":
        """Rebuild a fitted detector for ``model``; refuses a different classifier unless ``check_classifier=False``."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG, directory / WEIGHTS
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(f"{directory} is not a saved Metzen detector (needs {CONFIG} and {WEIGHTS}); save one with MetzenDetector.save")
        try:
            cfg: dict[str, Any] = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({exc}); re-save the detector") from None
        if cfg.get("format") != FORMAT or cfg.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{cfg_path} is not a {FORMAT} v{FORMAT_VERSION} file (got {cfg.get('format')!r} v{cfg.get('format_version')!r})")
        params = dict(cfg["params"])
        if "widths" in params:
            params["widths"] = tuple(params["widths"])
        det = cls(model, **params)
        det._validate_params()
        fp = classifier_fingerprint(model)
        if check_classifier and fp != cfg["classifier_sha256"]:
            raise CheckpointError(f"the detector in {directory} was trained on another classifier (weights sha256 differ); "
                                  "pass the same model, or check_classifier=False to use it anyway")
        shape = tuple(int(s) for s in cfg["activation_shape"])
        subnet = MetzenSubnetwork(shape[0], int(cfg["pools"]), tuple(cfg["widths"]))
        try:
            subnet.load_state_dict(load_file(str(w_path)), strict=True)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise CheckpointError(f"{w_path} does not match the detector described in {CONFIG} ({str(exc).splitlines()[0]}); re-save it") from None
        subnet.eval()
        subnet.requires_grad_(False)
        det.subnet_ = subnet
        det.activation_shape_ = shape
        det.pools_ = int(cfg["pools"])
        det.loss_history_ = list(cfg["loss_history"])
        det.n_natural_, det.n_adversarial_ = int(cfg["n_natural"]), int(cfg["n_adversarial"])
        det.classifier_sha256_ = fp
        det.classes_ = np.array([0, 1])
        return det
