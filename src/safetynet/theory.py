"""Section 4 of the SafetyNet paper: bar functions and p-domains, built only from ReLUs.

The paper (Lu, Issaranon, Forsyth, ICCV 2017, sec. 4) argues that ReLU networks can carve out
small "p-domains" with basis functions of small support. With ``R`` the ReLU:

* basic bar function ``φ(x; i, s, ε) = (1/ε) [R(x_i - s + ε) - 2 R(x_i - s) + R(x_i - s - ε)]``,
  a hat of height 1 at ``x_i = s`` that is positive exactly where ``|x_i - s| < ε``;
* bar function ``b(x; I, s, ε) = R(Σ_{i∈I} φ(x; i, s_i, ε_i) - #I + 1)``, positive exactly where
  ``Σ_{i∈I} |x_i - s_i| / ε_i < 1`` (for a common ε: ``||x_I - s_I||_1 < ε``), peak 1 at ``s``.

The paper then binarizes with a threshold ``t`` (``b_t(u) = [u > t]``) and notes that
``{x | b_t(b(x; 1, 0, ε) + b(x; 1, 1, ε)) = 1}`` is disconnected for ε < 1/2: two slabs around
``x_1 = 0`` and ``x_1 = 1``. Reaching a prescribed code is therefore a search over a
non-convex, disconnected feasible set -- the paper's reason why attacking SafetyNet's quantized
codes is hard. :func:`two_bar_constraint` evaluates exactly that set.

Indices are 0-based here: the paper's ``φ(x; 1, ...)`` (a bar in the first coordinate, ``x``)
is ``basic_bar(x, 0, ...)``.

Every function has an ``nn.Module`` twin made of ``nn.Linear`` and ``nn.ReLU`` only
(:class:`BasicBar`, :class:`Bar`), which shows that a ReLU network represents these functions
exactly. Figure 5 of the paper is regenerated with::

    python -c "from safetynet.theory import plot_figure5; plot_figure5('docs/figures/figure5.png')"
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .errors import InputError

__all__ = ["basic_bar", "bar", "binarize", "two_bar_constraint", "BasicBar", "Bar", "plot_figure5"]


def _check_eps(eps: float, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise InputError(f"{name} must be a positive finite number (the half-width of the bar), got {eps!r}")
    return float(eps)


def _check_x(x: object, dim_needed: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor of points (..., D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"x must be a float tensor, got dtype {x.dtype}; use x.float()")
    if x.ndim < 1 or x.shape[-1] < dim_needed:
        raise InputError(f"x must have shape (..., D) with D > {dim_needed - 1} for the indices used, got {tuple(x.shape)}")
    return x


def _check_index(i: int, name: str = "i") -> int:
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise InputError(f"{name} must be a non-negative int coordinate index (0-based), got {i!r}")
    return i


def basic_bar(x: torch.Tensor, i: int, s: float, eps: float) -> torch.Tensor:
    """φ(x; i, s, ε) of the paper, for points ``x`` of shape (..., D); returns shape (...)."""
    i, eps = _check_index(i), _check_eps(eps)
    x = _check_x(x, i + 1)
    u = x[..., i] - s
    r = torch.relu
    return (r(u + eps) - 2 * r(u) + r(u - eps)) / eps


def _bar_args(indices: Sequence[int] | int, s: Sequence[float] | float, eps: Sequence[float] | float
              ) -> tuple[list[int], list[float], list[float]]:
    idx = [indices] if isinstance(indices, int) else list(indices)
    if not idx:
        raise InputError("the index set I must not be empty")
    idx = [_check_index(i, "every index in I") for i in idx]
    if len(set(idx)) != len(idx):
        raise InputError(f"the index set I must not repeat indices, got {idx}")

    def per_index(v: Sequence[float] | float, name: str) -> list[float]:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return [float(v)] * len(idx)
        vals = [float(a) for a in v]
        if len(vals) != len(idx):
            raise InputError(f"{name} must be a number or one value per index in I ({len(idx)}), got {len(vals)}")
        return vals

    s_list = per_index(s, "s")
    if not all(math.isfinite(a) for a in s_list):
        raise InputError(f"s must be finite, got {s_list}")
    e_list = [_check_eps(e) for e in per_index(eps, "eps")]
    return idx, s_list, e_list


def bar(x: torch.Tensor, indices: Sequence[int] | int, s: Sequence[float] | float,
        eps: Sequence[float] | float) -> torch.Tensor:
    """b(x; I, s, ε) = R(Σ_{i∈I} φ(x; i, s_i, ε_i) − #I + 1); ``s``/``eps`` scalar or one per index."""
    idx, s_list, e_list = _bar_args(indices, s, eps)
    x = _check_x(x, max(idx) + 1)
    total = sum(basic_bar(x, i, si, ei) for i, si, ei in zip(idx, s_list, e_list))
    return torch.relu(total - len(idx) + 1)


def binarize(u: torch.Tensor, t: float) -> torch.Tensor:
    """b_t(u): 1 where ``u > t``, else 0 (the paper's binarization with threshold t > 0)."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise InputError(f"the binarization threshold t must be a positive number, got {t!r}")
    return (u > t).to(u.dtype)


def two_bar_constraint(x: torch.Tensor, eps: float, t: float) -> torch.Tensor:
    """The paper's disconnected constraint set {x | b_t(b(x; 1, 0, ε) + b(x; 1, 1, ε)) = 1}, as a bool mask.

    Two bars on the first coordinate (paper index 1), centred at 0 and at 1. For ε < 1/2 their
    supports (−ε, ε) and (1 − ε, 1 + ε) are disjoint, so the set is two separate slabs
    ``|x_1| < ε(1 − t)`` and ``|x_1 − 1| < ε(1 − t)`` (empty for t >= 1).
    """
    u = bar(x, 0, 0.0, eps) + bar(x, 0, 1.0, eps)
    return binarize(u, t).bool()


# --------------------------------------------------------------------------- as ReLU networks


class BasicBar(nn.Sequential):
    """φ(·; i, s, ε) as ``Linear(D, 3) → ReLU → Linear(3, 1)``, with fixed (non-trainable) weights.

    The first layer computes ``x_i − s + ε, x_i − s, x_i − s − ε``; the second weighs the three
    ReLUs by ``(1, −2, 1) / ε``. Output shape (N, 1).
    """

    def __init__(self, dim: int, i: int, s: float, eps: float) -> None:
        i, eps = _check_index(i), _check_eps(eps)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= i:
            raise InputError(f"dim must be an int > i ({i}), got {dim!r}")
        first, second = nn.Linear(dim, 3), nn.Linear(3, 1)
        with torch.no_grad():
            first.weight.zero_()
            first.weight[:, i] = 1.0
            first.bias.copy_(torch.tensor([-s + eps, -s, -s - eps]))
            second.weight.copy_(torch.tensor([[1.0, -2.0, 1.0]]) / eps)
            second.bias.zero_()
        super().__init__(first, nn.ReLU(), second)
        self.requires_grad_(False)


class Bar(nn.Sequential):
    """b(·; I, s, ε) as ``Linear(D, 3#I) → ReLU → Linear(3#I, 1) → ReLU`` (fixed weights).

    The hidden layer holds the three ReLUs of each φ; the output layer sums them with weights
    ``(1, −2, 1)/ε_i`` and bias ``1 − #I``, then the last ReLU clips at 0. Output shape (N, 1).
    """

    def __init__(self, dim: int, indices: Sequence[int] | int, s: Sequence[float] | float,
                 eps: Sequence[float] | float) -> None:
        idx, s_list, e_list = _bar_args(indices, s, eps)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= max(idx):
            raise InputError(f"dim must be an int > every index in I ({max(idx)}), got {dim!r}")
        k = len(idx)
        first, second = nn.Linear(dim, 3 * k), nn.Linear(3 * k, 1)
        with torch.no_grad():
            first.weight.zero_()
            second.weight.zero_()
            for j, (i, si, ei) in enumerate(zip(idx, s_list, e_list)):
                first.weight[3 * j:3 * j + 3, i] = 1.0
                first.bias[3 * j:3 * j + 3] = torch.tensor([-si + ei, -si, -si - ei])
                second.weight[0, 3 * j:3 * j + 3] = torch.tensor([1.0, -2.0, 1.0]) / ei
            second.bias.fill_(1.0 - k)
        super().__init__(first, nn.ReLU(), second, nn.ReLU())
        self.requires_grad_(False)


# --------------------------------------------------------------------------- Figure 5


def plot_figure5(path: str | os.PathLike[str], extent: float = 2.0, resolution: int = 401) -> Path:
    """The paper's Figure 5 on the (x, y) plane, black = 0 and white = 1, written atomically as PNG.

    Left: φ(x; 1, 0, 1) (a bar in x, independent of y); centre: φ(x; 2, 0, 1); right:
    b(x; {1, 2}, 0, 1) (a diamond, the L1 ball of radius 1). Paper indices are 1-based.
    """
    from .evaluation.plots import new_figure, save_figure

    if not isinstance(resolution, int) or resolution < 3:
        raise InputError(f"resolution must be an int >= 3, got {resolution!r}")
    extent = _check_eps(extent, "extent")
    axis = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    pts = torch.stack([xx, yy], dim=-1)  # (H, W, 2): pts[..., 0] = x, pts[..., 1] = y
    panels = [
        (basic_bar(pts, 0, 0.0, 1.0), r"$\phi(\mathbf{x}; 1, 0, 1)$"),
        (basic_bar(pts, 1, 0.0, 1.0), r"$\phi(\mathbf{x}; 2, 0, 1)$"),
        (bar(pts, [0, 1], 0.0, 1.0), r"$b(\mathbf{x}; \{1, 2\}, \mathbf{0}, 1)$"),
    ]
    fig = new_figure(9.0, 3.3, dpi=110)
    axes = fig.subplots(1, 3)
    for ax, (img, label) in zip(axes, panels):
        ax.imshow(img.numpy(), cmap="gray", vmin=0.0, vmax=1.0, origin="lower",
                  extent=(-extent, extent, -extent, extent), interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    return save_figure(fig, path)
