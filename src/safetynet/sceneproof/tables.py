"""SceneProof's tables (Lu et al., ICCV 2017, sec. 3): what each row and cell of Tables 1-4 means, as functions.

Rates are those of :func:`safetynet.metrics.safetynet_rates` with ``positive_class=1``
(real): F→T = fake patches labelled real and not rejected / fake patches; T→F = real patches
labelled fake and not rejected / real patches; T→T reject = real patches labelled real and
rejected / real patches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .bundle import PatchAnalysis
from .labels import FAKE, REAL

__all__ = ["DEFENCES", "RATE_KEYS", "TABLE2_COLUMNS", "TABLE4_METHODS", "UNSEEN_KINDS", "UNSEEN_NAMES", "average4",
           "average_rows", "defence_rates", "table2_row", "table3_row", "table4_cells"]

TABLE2_COLUMNS = ("Classifier Acc", "B", "A", "B∧A", "A∨B", "A∨B, T")
RATE_KEYS = ("F->T", "T->F", "T->T reject")  # the names of safetynet.metrics.safetynet_rates
DEFENCES = {"Ori": None, "Subnet Det": "M", "Det A": "A", "Det ABC": "ABC"}
#: The paper's names for the engine's rows (safetynet.evaluation.rows) in SceneProof's Table 4.
TABLE4_METHODS = {"bim": "Gradient Descent (I)", "type2": "Gradient Descent (II)",
                  "transfer-fgsm": "Surrogate FastSign TF (I)", "transfer-bim": "Surrogate GradDesc TF (I)",
                  "finetune-tf": "Surrogate Finetune TF (II)", "subnet-tf": "Surrogate Subnet Det TF (II)"}
UNSEEN_KINDS = ("zero_depth", "down_up_sample", "jpeg_degrade", "rendered")
UNSEEN_NAMES = {"zero_depth": "zero D channel", "down_up_sample": "down-up sampled", "jpeg_degrade": "low quality JPEG",
                "rendered": "rendered (simulator)", "icl-nuim": "rendered (ICL-NUIM)"}

def _mean(mask: np.ndarray) -> float:
    mask = np.asarray(mask, dtype=bool)
    return float(mask.mean()) if mask.size else math.nan


def table2_row(y_true: Any, y_pred: Any, flags_a: Any, flags_b: Any) -> dict[str, float]:
    """One row of Table 2/3: accuracy, share flagged by B, A, B∧A, A∨B, and A∨B among predicted True."""
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    fa, fb = np.asarray(flags_a, dtype=bool), np.asarray(flags_b, dtype=bool)
    if not (yt.shape == yp.shape == fa.shape == fb.shape) or yt.ndim != 1:
        raise InputError("table2_row needs four equal-length 1-D arrays")
    either = fa | fb
    return {"n": int(yt.size), "Classifier Acc": _mean(yp == yt), "B": _mean(fb), "A": _mean(fa),
            "B∧A": _mean(fa & fb), "A∨B": _mean(either), "A∨B, T": _mean(either[yp == REAL])}


def table3_row(y_pred: Any, flags_a: Any, flags_b: Any, flags_abc: Any | None = None) -> dict[str, float]:
    """Table 3 row for fakes (ground truth False): Table 2's columns plus the share passing as real."""
    yp = np.asarray(y_pred)
    row = table2_row(np.full(yp.shape, FAKE), yp, flags_a, flags_b)
    either = np.asarray(flags_a, dtype=bool) | np.asarray(flags_b, dtype=bool)
    row["passes as real (A∨B)"] = _mean((yp == REAL) & ~either)
    if flags_abc is not None:
        row["passes as real (ABC)"] = _mean((yp == REAL) & ~np.asarray(flags_abc, dtype=bool))
    return row


def table4_cells(y_true: Any, y_pred: Any, rejected: Any | None = None) -> dict[str, float]:
    """F→T, T→F, T→T reject (the paper's rates; see the module docstring); ``rejected=None``: no detector."""
    from ..metrics import safetynet_rates

    yt = np.asarray(y_true)
    rej = np.zeros(yt.shape, dtype=bool) if rejected is None else np.asarray(rejected, dtype=bool)
    r = safetynet_rates(yt, np.asarray(y_pred), rej, positive_class=REAL)
    return {k: r[k] for k in RATE_KEYS}


def average_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """Mean of each key over rows, ignoring missing and NaN values (NaN when none is left)."""
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if r.get(k) is not None and not math.isnan(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out


def defence_rates(y_true: np.ndarray, a: PatchAnalysis) -> dict[str, dict[str, float]]:
    """Table 4 cells of every defence for one analysed set."""
    out = {}
    for name, letters in DEFENCES.items():
        if letters is None:
            rej = None
        elif letters == "M":
            if a.metzen is None:
                continue
            rej = a.metzen > 0
        else:
            rej = a.flags(letters)
        out[name] = table4_cells(y_true, a.pred, rej)
    return out


def average4(name: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"Method": name}
    for d in DEFENCES:
        cells = [r[d] for r in rows if d in r]
        if cells:
            out[d] = average_rows(cells, RATE_KEYS)
    return out
