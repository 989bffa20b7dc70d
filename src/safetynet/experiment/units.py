"""The experiment's units of work: pure functions of their arguments, run by any executor.

:func:`natural_chunk` reads a chunk of clean images (logits + the tapped layer's maps);
:func:`attack_chunk` attacks a chunk of natural images with one attack setting and returns what
the detectors need (success, labels, norms, logits and bit-packed codes; full maps only when the
Metzen subnetwork will train or be tested on them). :func:`fit_svm` and :func:`fit_metzen` fit
one detector. None of them touches the disk or global state, so they run the same in this
process, in a worker process or on a Ray node (:mod:`safetynet.executors`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..codes import ActivationQuantizer, pool_activation
from ..detectors.persistence import pack_codes, unpack_codes
from ..taps import extract_activations
from .config import AttackSetting

__all__ = ["SVM_KINDS", "attack_chunk", "code_features", "codes_of", "fit_metzen", "fit_svm", "natural_chunk",
           "unpack"]

#: The SVM detectors: name -> code levels. Binary and quaternary codes read the tapped layer
#: (optionally pooled to ``pool``); "svm-pooled" quantizes each channel average-pooled to ``pooled``.
SVM_KINDS = {"svm-binary": 2, "svm-quaternary": 4, "svm-pooled": 4}


def code_features(maps: torch.Tensor, kind: str, pool: int | None, pooled: int) -> torch.Tensor:
    """The activations an SVM kind quantizes, from the tapped layer's maps (N, C, H, W) or (N, D)."""
    if kind == "svm-pooled":
        return F.adaptive_avg_pool2d(maps, pooled).flatten(1) if maps.ndim == 4 else maps.flatten(1)
    return pool_activation(maps, pool)


def codes_of(maps: torch.Tensor, quantizers: Mapping[str, ActivationQuantizer], pool: int | None, pooled: int
             ) -> dict[str, np.ndarray]:
    """uint8 codes per SVM kind."""
    return {k: q.transform(code_features(maps, k, pool, pooled)) for k, q in quantizers.items()}


def unpack(arrays: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
    """Codes of one SVM kind from a unit's arrays (stored bit-packed)."""
    return unpack_codes(arrays[f"codes:{kind}"], int(arrays[f"units:{kind}"]))


def _on(model: nn.Module, device: str) -> nn.Module:
    return model if device == "cpu" else model.to(device)


@torch.no_grad()
def natural_chunk(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int, device: str = "cpu"
                  ) -> dict[str, np.ndarray]:
    """Logits and the tapped layer's maps of clean images."""
    model = _on(model, device)
    logits, maps = extract_activations(model, x.to(device), [layer], batch_size, flatten=False)
    return {"logits": logits.float().cpu().numpy(), "maps": maps[layer].float().cpu().numpy()}


def attack_chunk(model: nn.Module, setting: AttackSetting, x: torch.Tensor, y: torch.Tensor, layer: str,
                 thresholds: Mapping[str, np.ndarray], pool: int | None, pooled: int, keep_maps: bool,
                 batch_size: int, device: str = "cpu") -> dict[str, np.ndarray]:
    """Attack natural images ``x`` (labels ``y``) with ``setting``; codes use the fitted ``thresholds``."""
    from ..attacks import Misclassification, TopKMisclassification
    from ..attacks.batched import attack_in_batches

    t0 = time.perf_counter()
    model = _on(model, device)
    x, y = x.to(device), y.to(device)

    def goal(yb: torch.Tensor) -> Any:
        return TopKMisclassification(yb, k=setting.top_k) if setting.top_k else Misclassification(yb)

    res = attack_in_batches(setting.build(), model, x, y, goal, eps=setting.eps, batch_size=batch_size)
    with torch.no_grad():
        logits, maps = extract_activations(model, res.clipped, [layer], batch_size, flatten=False)
    m = maps[layer].float().cpu()
    delta = (res.clipped - x).flatten(1).cpu()
    out: dict[str, np.ndarray] = {
        "success": res.success.cpu().numpy().astype(bool), "pred": logits.argmax(1).cpu().numpy().astype(np.int64),
        "logits": logits.float().cpu().numpy(), "l2": delta.norm(dim=1).numpy(),
        "linf": delta.abs().amax(dim=1).numpy()}
    quantizers = {k: ActivationQuantizer.from_thresholds(t, SVM_KINDS[k]) for k, t in thresholds.items()}
    for kind, codes in codes_of(m, quantizers, pool, pooled).items():
        out[f"codes:{kind}"] = pack_codes(codes, SVM_KINDS[kind])
        out[f"units:{kind}"] = np.asarray(codes.shape[1])
    if keep_maps:
        out["maps"] = m.numpy()
    # The unit's own compute time, cached with it: per-setting costs stay measurable when units of
    # several settings share the workers, and after a resume (benchmarks/grid_projection.py).
    out["seconds"] = np.asarray(time.perf_counter() - t0)
    return out


def fit_svm(X: np.ndarray, y: np.ndarray, params: Mapping[str, Any]) -> Any:
    """A fitted :class:`~safetynet.detectors.CodeSVMDetector` on codes ``X`` (label 1 = adversarial)."""
    from ..detectors import CodeSVMDetector

    return CodeSVMDetector(**dict(params)).fit(X, y)


def fit_metzen(model: nn.Module, layer: str, epochs: int, seed: int, natural_maps: np.ndarray,
               adversarial_maps: np.ndarray) -> Any:
    """A fitted Metzen et al. subnetwork on the tapped layer's maps."""
    from ..detectors.metzen import MetzenDetector

    det = MetzenDetector(model, layer=layer, epochs=epochs, seed=seed)
    return det.fit_activations(torch.from_numpy(natural_maps), torch.from_numpy(adversarial_maps))
