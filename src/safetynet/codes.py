"""Discrete activation codes: quantize each ReLU of a late layer at a few thresholds (paper sec. 2.1).

SafetyNet (Lu, Issaranon, Forsyth, ICCV 2017) does not look at raw activations: "for a layer of
ReLUs at a high level in the classification network, we quantize each ReLU at some set of
thresholds to generate a discrete code". One threshold gives a binary code, three give a
quaternary code. This module holds

- :class:`ActivationQuantizer`: learns per-unit thresholds on *natural* activations and maps
  activations to codes (``transform``) or to a differentiable surrogate (``smooth``);
- :func:`layer_activations` / :class:`CodeExtractor`: model + images + layer names -> pooled
  activations -> codes per layer, batched and without gradients.

Code encoding (what the RBF-SVM sees)
-------------------------------------
A code is one ``uint8`` *level* per unit, ``level = #{k : a > t_k}`` in ``0 .. levels-1``. The
detector's squared distance is therefore ``sum_u (l_u - l'_u)^2``: for binary codes this is the
Hamming distance; for quaternary codes a jump of two levels costs 4, not 2. We chose integer
levels over a thermometer encoding (``levels-1`` bits per unit, where the squared distance is the
L1 distance between levels) because it keeps one feature per ReLU -- the code *is* the quantized
layer, as in the paper's Eq. (1) -- and because the fast kernel
(:mod:`safetynet.detectors.kernel`) is exact for it with an int8 matrix product.

Ties: ReLU outputs are often exactly 0 and a per-unit quantile is then often 0 too. The rule is
strict, ``a > t``, so an inactive unit is level 0 whatever the threshold; tied thresholds (e.g.
quaternary quantiles 0.25 and 0.5 both at 0) just leave some levels unused for that unit.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .taps import extract_activations, resolve_layers

#: Default quantiles per number of levels: the median for binary codes, quartiles for quaternary.
DEFAULT_QUANTILES = {2: (0.5,), 4: (0.25, 0.5, 0.75)}


def _to_numpy_2d(a: object, name: str = "activations") -> np.ndarray:
    """Activations as a float32 (N, D) array; 4-D (N, C, H, W) inputs are flattened per row."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be an array or tensor of numbers: {e}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise InputError(f"{name} must have shape (N, D) or (N, C, H, W), got {arr.shape}; add a batch dimension")
    arr = arr.reshape(arr.shape[0], -1).astype(np.float32, copy=False)
    if arr.size and not np.isfinite(arr).all():
        raise InputError(f"{name} contain NaN or Inf; check the model and its inputs")
    return arr


class ActivationQuantizer:
    """Quantize each unit of a layer at ``levels - 1`` thresholds into integer levels ``0..levels-1``.

    Parameters
    ----------
    levels : int, default=2
        Number of code levels: 2 (binary, one threshold) or 4 (quaternary, three thresholds);
        any integer in [2, 256] works.
    thresholds : "quantile", float or sequence of floats, default="quantile"
        ``"quantile"`` learns per-unit thresholds in :meth:`fit` at ``quantiles`` of the natural
        activations. A number (binary only) or a sequence of ``levels - 1`` increasing numbers
        is used as the same thresholds for every unit (e.g. ``0.0`` = "is the ReLU active").
    quantiles : sequence of floats or None, default=None
        Quantiles for ``thresholds="quantile"``; ``None`` means the median for binary and
        (0.25, 0.5, 0.75) for quaternary codes, evenly spaced otherwise.

    Attributes
    ----------
    thresholds_ : ndarray of shape (levels - 1, n_features_in_), float32
        Non-decreasing along axis 0 for every unit.
    n_features_in_ : int
    """

    def __init__(self, levels: int = 2, thresholds: str | float | Sequence[float] = "quantile",
                 quantiles: Sequence[float] | None = None) -> None:
        self.levels = levels
        self.thresholds = thresholds
        self.quantiles = quantiles

    # -- parameters -----------------------------------------------------------------------------
    def _check_levels(self) -> int:
        lv = self.levels
        if isinstance(lv, bool) or not isinstance(lv, (int, np.integer)) or not 2 <= lv <= 256:
            raise InputError(f"levels must be an integer in [2, 256] (2 = binary, 4 = quaternary), got {self.levels!r}")
        return int(self.levels)

    def _quantiles(self, levels: int) -> np.ndarray:
        q = self.quantiles
        if q is None:
            q = DEFAULT_QUANTILES.get(levels, tuple(np.arange(1, levels) / levels))
        q = np.asarray(q, dtype=np.float64).ravel()
        if q.shape != (levels - 1,) or not np.all((q > 0) & (q < 1)) or np.any(np.diff(q) <= 0):
            raise InputError(f"quantiles must be {levels - 1} increasing numbers in (0, 1) for {levels} levels, "
                             f"got {self.quantiles!r}")
        return q

    def _fixed_thresholds(self, levels: int) -> np.ndarray:
        t = self.thresholds
        if isinstance(t, Real) and not isinstance(t, bool):
            t = [t]
        try:
            arr = np.asarray(t, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"thresholds must be 'quantile', a number or a sequence of numbers, got {t!r}") from None
        if arr.shape != (levels - 1,) or not np.isfinite(arr).all() or np.any(np.diff(arr) < 0):
            raise InputError(f"{levels} levels need {levels - 1} finite non-decreasing thresholds, "
                             f"got {self.thresholds!r}")
        return arr

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, activations: object, y: object = None) -> "ActivationQuantizer":
        """Learn thresholds from natural activations of shape (N, D) or (N, C, H, W)."""
        levels = self._check_levels()
        a = _to_numpy_2d(activations)
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise InputError(f"need at least one activation row and unit to fit thresholds, got shape {a.shape}")
        if isinstance(self.thresholds, str):
            if self.thresholds != "quantile":
                raise InputError(f"thresholds must be 'quantile', a number or a sequence, got {self.thresholds!r}")
            # float64 quantiles, rounded to float32 once: the same numbers transform() compares with.
            t = np.quantile(a.astype(np.float64), self._quantiles(levels), axis=0)  # (L-1, D)
            t = np.maximum.accumulate(t, axis=0)  # guard monotonicity against rounding
        else:
            t = np.repeat(self._fixed_thresholds(levels)[:, None], a.shape[1], axis=1)
        self.thresholds_ = t.astype(np.float32)
        self.n_features_in_ = a.shape[1]
        return self

    def _check_fitted(self) -> np.ndarray:
        t = getattr(self, "thresholds_", None)
        if t is None:
            raise InputError("this ActivationQuantizer is not fitted yet; call fit(natural_activations) first")
        return t

    def _check_width(self, d: int) -> None:
        if d != self.n_features_in_:
            raise InputError(f"activations have {d} units per row, but the quantizer was fitted on "
                             f"{self.n_features_in_}; use the same layer and pooling as in fit")

    # -- hard and smooth codes ------------------------------------------------------------------
    def transform(self, activations: object) -> np.ndarray:
        """Codes of shape (N, D), dtype uint8, ``code = #{k : a > t_k}``."""
        t = self._check_fitted()
        a = _to_numpy_2d(activations)
        self._check_width(a.shape[1])
        codes = np.zeros(a.shape, dtype=np.uint8)
        for tk in t:  # levels-1 passes; each adds 1 where the unit exceeds that threshold
            codes += a > tk
        return codes

    def fit_transform(self, activations: object, y: object = None) -> np.ndarray:
        return self.fit(activations).transform(activations)

    def transform_torch(self, activations: torch.Tensor) -> torch.Tensor:
        """Torch version of :meth:`transform` for (N, D) tensors; returns uint8 (N, D)."""
        t = torch.as_tensor(self._check_fitted(), device=activations.device)
        a = activations.detach().reshape(activations.shape[0], -1).float()
        self._check_width(a.shape[1])
        return (a[:, None, :] > t[None]).sum(1, dtype=torch.uint8)

    def smooth(self, activations: torch.Tensor, sharpness: float) -> torch.Tensor:
        """Differentiable codes ``sum_k sigmoid(lambda * (a - t_k) - sqrt(lambda))`` of shape (N, D).

        The paper's type-II attack replaces the step by a sigmoid of sharpness lambda
        (``sharpness``, in activation units^-1). Each logistic is centred at ``t_k + 1/sqrt(lambda)``
        rather than at ``t_k``: the hard rule is strict (``a > t``) and ReLU outputs sit exactly
        on a zero threshold, where a centred sigmoid would stay at 1/2 for every lambda. With the
        shift, ``smooth -> transform`` pointwise as lambda grows, ties included.
        """
        lam = float(sharpness)
        if not (lam > 0 and math.isfinite(lam)):
            raise InputError(f"sharpness must be a positive finite number, got {sharpness!r}")
        if not isinstance(activations, torch.Tensor):
            raise InputError(f"activations must be a torch.Tensor for smooth(), got {type(activations).__name__}")
        thresholds = self._check_fitted()
        a = activations.reshape(activations.shape[0], -1)
        self._check_width(a.shape[1])
        t = torch.as_tensor(thresholds, dtype=a.dtype if a.is_floating_point() else torch.float32,
                            device=a.device)
        z = lam * (a[:, None, :] - t[None]) - math.sqrt(lam)  # (N, L-1, D)
        return torch.sigmoid(z).sum(1)

    # -- state ----------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Plain state for persistence: ``{"levels": int, "thresholds": ndarray (L-1, D) float32}``."""
        return {"levels": int(self.levels), "thresholds": self._check_fitted().copy()}

    @classmethod
    def from_thresholds(cls, thresholds: np.ndarray, levels: int | None = None) -> "ActivationQuantizer":
        """Rebuild a fitted quantizer from a ``(levels - 1, D)`` threshold array (e.g. after loading)."""
        t = np.asarray(thresholds)
        if t.ndim != 2 or t.shape[1] == 0 or not np.issubdtype(t.dtype, np.floating):
            raise InputError(f"thresholds must be a float array of shape (levels - 1, D), got {t.dtype} {t.shape}")
        levels = t.shape[0] + 1 if levels is None else int(levels)
        if t.shape[0] != levels - 1:
            raise InputError(f"{levels} levels need {levels - 1} threshold rows, got {t.shape[0]}")
        if not np.isfinite(t).all() or np.any(np.diff(t, axis=0) < 0):
            raise InputError("thresholds must be finite and non-decreasing along the level axis")
        q = cls(levels=levels)
        q._check_levels()
        q.thresholds_ = t.astype(np.float32)
        q.n_features_in_ = t.shape[1]
        return q

    def __repr__(self) -> str:
        return (f"ActivationQuantizer(levels={self.levels!r}, thresholds={self.thresholds!r}, "
                f"quantiles={self.quantiles!r})")


# ---------------------------------------------------------------------------------------------
# model -> activations -> codes
# ---------------------------------------------------------------------------------------------
def check_pool(pool: int | None) -> int | None:
    if pool is None:
        return None
    if isinstance(pool, bool) or not isinstance(pool, (int, np.integer)) or pool < 1:
        raise InputError(f"pool must be None or a positive integer output size, got {pool!r}")
    return int(pool)


def pool_activation(a: torch.Tensor, pool: int | None) -> torch.Tensor:
    """Spatially average-pool a conv activation (N, C, H, W) to (N, C*pool*pool); flatten others.

    ResNet-20's ``layer3.2.relu`` is 64x8x8 = 4096 units; ``pool=4`` gives 1024. Differentiable,
    so the smoothed detector path uses the same function.
    """
    if pool is not None and a.ndim == 4 and a.shape[-2:] != (pool, pool):
        a = F.adaptive_avg_pool2d(a, pool)
    return a.reshape(a.shape[0], -1)


def layer_activations(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | str,
                      pool: int | None = None, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Pooled, flattened activations ``{layer: (N, D) float32}`` of ``images``, batched, no grad."""
    acts, _ = activations_and_logits(model, images, layers, pool, batch_size)
    return acts


def activations_and_logits(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | str,
                           pool: int | None = None, batch_size: int = 256
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One batched no-grad pass: ``({layer: pooled (N, D) float32}, logits (N, K))``."""
    from ._validation import check_images

    check_images(images)
    pool = check_pool(pool)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    names = resolve_layers(model, layers)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    logits: list[torch.Tensor] = []
    # Pool per chunk so 4096-unit conv maps are never all held at once.
    for i in range(0, max(len(images), 1), batch_size):
        lg, acts = extract_activations(model, images[i:i + batch_size], names, batch_size=batch_size, flatten=False)
        logits.append(lg)
        for n in names:
            parts[n].append(pool_activation(acts[n], pool).float())
    return {n: torch.cat(v) for n, v in parts.items()}, torch.cat(logits)


class CodeExtractor:
    """Model + tapped layers + per-layer quantizers: images -> ``{layer: codes (N, D) uint8}``.

    ``fit(natural_images)`` learns the thresholds from natural activations only;
    ``transform(images)`` returns the codes. Example::

        ext = CodeExtractor(model, ["layer3.2.relu"], levels=2, pool=4).fit(x_train)
        codes = ext.transform(x_test)["layer3.2.relu"]  # (N, 1024) uint8
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | str, levels: int = 2,
                 thresholds: str | float | Sequence[float] = "quantile", quantiles: Sequence[float] | None = None,
                 pool: int | None = None, batch_size: int = 256) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.levels = levels
        self.thresholds = thresholds
        self.quantiles = quantiles
        self.pool = check_pool(pool)
        self.batch_size = batch_size
        self.quantizers_: dict[str, ActivationQuantizer] = {}

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return layer_activations(self.model, images, self.layers, self.pool, self.batch_size)

    def fit(self, natural_images: torch.Tensor) -> "CodeExtractor":
        return self.fit_activations(self.activations(natural_images))

    def fit_activations(self, activations: Mapping[str, torch.Tensor]) -> "CodeExtractor":
        self.quantizers_ = {n: ActivationQuantizer(self.levels, self.thresholds, self.quantiles).fit(activations[n])
                            for n in self.layers}
        return self

    def codes_from_activations(self, activations: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        if not self.quantizers_:
            raise InputError("this CodeExtractor is not fitted yet; call fit(natural_images) first")
        return {n: self.quantizers_[n].transform(activations[n]) for n in self.layers}

    def transform(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return self.codes_from_activations(self.activations(images))


def extract_codes(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | str,
                  quantizers: Mapping[str, ActivationQuantizer], pool: int | None = None,
                  batch_size: int = 256) -> dict[str, np.ndarray]:
    """Codes ``{layer: (N, D) uint8}`` with already-fitted ``quantizers`` (one per layer)."""
    names = resolve_layers(model, layers)
    missing = [n for n in names if n not in quantizers]
    if missing:
        raise InputError(f"no fitted quantizer for layers {missing}; fit one per layer first")
    acts = layer_activations(model, images, names, pool, batch_size)
    return {n: quantizers[n].transform(acts[n]) for n in names}


__all__ = ["ActivationQuantizer", "CodeExtractor", "DEFAULT_QUANTILES", "activations_and_logits", "check_pool",
           "extract_codes",
           "layer_activations", "pool_activation"]
