"""Figures of the SafetyNet paper from evaluation numbers: PNG files, written atomically.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, so importing
this module changes no global matplotlib state (no ``pyplot``, no backend switch) and works
without a display.

* :func:`plot_success_vs_accuracy` -- Figure 2 (x: adversary success, y: detector accuracy);
* :func:`plot_roc_curves` -- Figure 3 (one ROC curve per attack);
* :func:`plot_cross_attack_heatmap` -- train attack x test attack, numbers in the cells;
* :func:`plot_success_vs_eps` -- attack success against the perturbation budget.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._io import atomic_path
from ..errors import InputError
from ..cross_attack import CrossAttackMatrix
from ..metrics import roc_auc, roc_curve

__all__ = ["plot_success_vs_accuracy", "plot_roc_curves", "plot_cross_attack_heatmap", "plot_success_vs_eps",
           "new_figure", "save_figure"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def new_figure(width: float = 5.0, height: float = 4.0, dpi: int = 120, layout: str | None = "constrained"):
    """A standalone figure on the Agg canvas (not registered with pyplot, so never leaks); ``layout=None``
    for axes placed by hand."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"figures are written as PNG; give a path ending in .png, got {path}")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _finite01(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0):
        raise InputError(f"{what} must be a rate in [0, 1], got {value!r}")
    return v


def plot_success_vs_accuracy(points: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                             title: str | None = None) -> Path:
    """The paper's Figure 2 layout: one marker per attack (and ε), one colour per detector series.

    Each point is a mapping with ``detector`` (series name), ``attack``,
    ``adversary_success`` and ``detector_accuracy`` (rates in [0, 1], plotted in %), and
    optionally ``eps`` (written next to the marker). Leftward (weaker adversary) and upward
    (better detector) is better.
    """
    if not points:
        raise InputError("plot_success_vs_accuracy needs at least one point")
    for p in points:
        for k in ("detector", "attack", "adversary_success", "detector_accuracy"):
            if k not in p:
                raise InputError(f"every point needs the key {k!r}; got keys {sorted(p)}")
    detectors = list(dict.fromkeys(str(p["detector"]) for p in points))
    attacks = list(dict.fromkeys(str(p["attack"]) for p in points))
    fig = new_figure(7.6, 4.2, layout=None)
    # Legends sit right of the axes: inside they hid points near the corners (e.g. weak attacks at low success).
    ax = fig.add_axes((0.09, 0.12, 0.6, 0.8))
    colors = {d: f"C{i % 10}" for i, d in enumerate(detectors)}
    markers = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(attacks)}
    for p in points:
        x = 100 * _finite01(p["adversary_success"], "adversary_success")
        y = 100 * _finite01(p["detector_accuracy"], "detector_accuracy")
        ax.scatter([x], [y], color=colors[str(p["detector"])], marker=markers[str(p["attack"])], s=40,
                   edgecolors="black", linewidths=0.4, zorder=3)
        if p.get("eps") is not None:
            ax.annotate(f"{p['eps']:g}" if isinstance(p["eps"], (int, float)) else str(p["eps"]), (x, y),
                        textcoords="offset points", xytext=(4, 3), fontsize=7)
    # Two legends: colour = detector, marker = attack.
    from matplotlib.lines import Line2D

    h_det = [Line2D([], [], color=colors[d], marker="o", linestyle="", label=d) for d in detectors]
    h_att = [Line2D([], [], color="gray", marker=markers[a], linestyle="", label=a) for a in attacks]
    leg = ax.legend(handles=h_det, title="detector", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
                    title_fontsize=7)
    ax.add_artist(leg)
    ax.legend(handles=h_att, title="attack", loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=7, title_fontsize=7)
    ax.set_xlabel("adversary success (%)  ← better")
    ax.set_ylabel("detector accuracy (%)  ↑ better")
    ax.set_xlim(-2, 102)
    ax.set_ylim(min(45.0, ax.get_ylim()[0]), 101)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_roc_curves(curves: Mapping[str, tuple[object, object]], path: str | os.PathLike[str],
                    title: str | None = None, log_fpr: bool = False) -> Path:
    """The paper's Figure 3: ``curves[attack] = (natural scores, adversarial scores)``.

    The legend gives each attack's AUC. ``log_fpr`` puts FPR on a log axis to show the
    low-FPR region (points with FPR = 0 are then left out).
    """
    if not curves:
        raise InputError("plot_roc_curves needs at least one (natural, adversarial) score pair")
    fig = new_figure(4.5, 4.2)
    ax = fig.add_subplot()
    for i, (name, pair) in enumerate(curves.items()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"curves[{name!r}] must be a pair (natural scores, adversarial scores)")
        fpr, tpr, _ = roc_curve(*pair)
        auc = roc_auc(*pair)
        if log_fpr:
            keep = fpr > 0
            fpr, tpr = fpr[keep], tpr[keep]
        ax.step(fpr, tpr, where="post", color=f"C{i % 10}", label=f"{name} (AUC {auc:.3f})")
    if log_fpr:
        ax.set_xscale("log")
    else:
        ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=0.8)
        ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate (natural flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_cross_attack_heatmap(matrix: CrossAttackMatrix, path: str | os.PathLike[str], metric: str = "auc",
                              title: str | None = None, fmt: str = "{:.2f}") -> Path:
    """Train attack (rows) x test attack (columns) heat map of ``metric``, numbers in the cells."""
    if not isinstance(matrix, CrossAttackMatrix):
        raise InputError(f"matrix must be a CrossAttackMatrix (from cross_attack_matrix), got {type(matrix).__name__}")
    values = np.asarray(matrix[metric], dtype=float)
    fig = new_figure(1.2 + 0.9 * len(matrix.cols), 1.0 + 0.6 * len(matrix.rows))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "n/a" if math.isnan(v) else fmt.format(v)
            # Dark text on the bright (yellow) end of viridis, light text elsewhere.
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white")
    ax.set_xticks(range(len(matrix.cols)), labels=list(matrix.cols), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.rows)), labels=list(matrix.rows), fontsize=8)
    ax.set_xlabel("test attack")
    ax.set_ylabel("detector trained on")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(title or metric)
    return save_figure(fig, path)


def plot_success_vs_eps(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike[str],
                        title: str | None = None, xlabel: str = "ε", ylabel: str = "attack success (%)") -> Path:
    """Attack success against the budget: ``series[name] = (eps values, success rates in [0, 1])``."""
    if not series:
        raise InputError("plot_success_vs_eps needs at least one series")
    fig = new_figure(4.8, 3.8)
    ax = fig.add_subplot()
    for i, (name, pair) in enumerate(series.items()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"series[{name!r}] must be a pair (eps values, success rates)")
        eps = np.asarray(pair[0], dtype=float)
        rate = np.asarray([_finite01(v, f"success rate of {name!r}") for v in pair[1]])
        if eps.ndim != 1 or eps.shape != rate.shape or eps.size == 0:
            raise InputError(f"series[{name!r}]: eps and success must be equally long 1-D sequences, got {eps.shape} and {rate.shape}")
        order = np.argsort(eps)
        ax.plot(eps[order], 100 * rate[order], marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_size_curve(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                    title: str = "Detection vs training-set size") -> Path:
    """AUC and calibrated TPR against examples per class, one line pair per attack (log x axis).

    ``rows``: dicts with ``label``, ``n_per_class``, ``auc`` and ``calibrated_tpr``.
    """
    if not rows:
        raise InputError("plot_size_curve needs at least one row")
    fig = new_figure(5.2, 3.8)
    ax = fig.add_subplot()
    labels = list(dict.fromkeys(str(r["label"]) for r in rows))
    for i, label in enumerate(labels):
        pts = sorted((int(r["n_per_class"]), _finite01(r["auc"], "auc"), _finite01(r["calibrated_tpr"], "tpr"))
                     for r in rows if str(r["label"]) == label)
        n = [p[0] for p in pts]
        ax.plot(n, [p[1] for p in pts], marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", label=f"{label}: AUC")
        ax.plot(n, [p[2] for p in pts], marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", linestyle="--",
                label=f"{label}: TPR at calibrated FPR")
    ax.set_xscale("log")
    ax.set_xlabel("training examples per class (natural = adversarial)")
    ax.set_ylabel("AUC / TPR")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return save_figure(fig, path)
