"""Gradient-boosted trees as plain arrays: export a fitted binary ``HistGradientBoostingClassifier``
and evaluate it in numpy, so the shipped model is stored without pickle (``npz`` read with
``allow_pickle=False``).

scikit-learn keeps each tree as a structured ``nodes`` array (``TreePredictor.nodes``: value,
feature_idx, num_threshold, missing_go_to_left, left, right, is_leaf, ...). We concatenate the
trees, make the child indices global, and walk all trees for all rows at once. The walk repeats
scikit-learn's rule (``_predictor.pyx``): NaN goes to the side ``missing_go_to_left`` names,
otherwise ``x <= num_threshold`` goes left; the raw score is the baseline plus the sum of the
leaf values (the learning rate is already in them), and P(class 1) is its logistic sigmoid.
Categorical splits are refused (the feature models use none).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import CheckpointError, InputError

__all__ = ["TREE_ARRAYS", "TreeEnsemble", "export_hgb"]

#: The arrays of an exported ensemble (names in the npz file).
TREE_ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "is_leaf", "value", "roots", "baseline")


def export_hgb(clf: object) -> dict[str, np.ndarray]:
    """The :data:`TREE_ARRAYS` of a fitted binary ``HistGradientBoostingClassifier``."""
    predictors = getattr(clf, "_predictors", None)
    if predictors is None:
        raise InputError("export_hgb needs a fitted HistGradientBoostingClassifier; call fit first")
    if getattr(clf, "n_trees_per_iteration_", 1) != 1:
        raise InputError("export_hgb handles binary classifiers only (one tree per iteration)")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in TREE_ARRAYS[:-2]}
    roots = []
    offset = 0
    for per_iteration in predictors:
        nodes = per_iteration[0].nodes
        if nodes["is_categorical"].any():
            raise InputError("export_hgb does not handle categorical splits")
        leaf = nodes["is_leaf"].astype(bool)
        roots.append(offset)
        parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int32))
        parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
        # Leaves point at themselves, so a walk can run a fixed number of steps for every row.
        idx = np.arange(len(nodes)) + offset
        parts["left"].append(np.where(leaf, idx, nodes["left"].astype(np.int64) + offset).astype(np.int32))
        parts["right"].append(np.where(leaf, idx, nodes["right"].astype(np.int64) + offset).astype(np.int32))
        parts["missing_left"].append(nodes["missing_go_to_left"].astype(np.uint8))
        parts["is_leaf"].append(leaf.astype(np.uint8))
        parts["value"].append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
        offset += len(nodes)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["roots"] = np.asarray(roots, dtype=np.int32)
    out["baseline"] = np.asarray(clf._baseline_prediction, dtype=np.float64).reshape(1)
    return out


class TreeEnsemble:
    """An exported ensemble (:func:`export_hgb`); ``p_class1(X)`` equals the classifier's
    ``predict_proba(X)[:, 1]`` up to float rounding of the sum."""

    def __init__(self, arrays: Mapping[str, np.ndarray], n_features: int) -> None:
        missing = [k for k in TREE_ARRAYS if k not in arrays]
        if missing:
            raise CheckpointError(f"tree arrays lack {', '.join(missing)}; re-export the model")
        a = {k: np.asarray(arrays[k]) for k in TREE_ARRAYS}
        n = len(a["value"])
        if any(len(a[k]) != n for k in TREE_ARRAYS[:-2]) or a["baseline"].shape != (1,):
            raise CheckpointError("tree arrays have inconsistent lengths; the model file is damaged")
        for k in ("left", "right", "roots"):
            if a[k].size and (a[k].min() < 0 or a[k].max() >= n):
                raise CheckpointError(f"tree array {k} points outside the {n} nodes; the model file is damaged")
        inner = a["is_leaf"] == 0
        if inner.any() and (a["feature"][inner].min() < 0 or a["feature"][inner].max() >= n_features):
            raise CheckpointError(f"the trees use features outside 0..{n_features - 1}; model and features differ")
        self.arrays = a
        self.n_features = int(n_features)
        # The deepest path bounds the walk; leaves loop on themselves, so extra steps are harmless.
        self.max_steps = self._depth()

    def _depth(self) -> int:
        a = self.arrays
        n_nodes = len(a["value"])
        steps = 0
        frontier = a["roots"].astype(np.int64)
        while True:
            inner = frontier[a["is_leaf"][frontier] == 0]
            if inner.size == 0:
                return steps
            steps += 1
            if steps > n_nodes:  # no path in an acyclic tree is longer than its node count
                raise CheckpointError("the trees contain a cycle; the model file is damaged")
            frontier = np.concatenate([a["left"][inner], a["right"][inner]]).astype(np.int64)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Baseline + sum of leaf values per row of ``X`` (N, n_features)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"X has shape {X.shape}, but the trees expect (N, {self.n_features})")
        a = self.arrays
        node = np.broadcast_to(a["roots"][None, :], (len(X), len(a["roots"]))).astype(np.int64)  # (N, T)
        rows = np.arange(len(X))[:, None]
        for _ in range(self.max_steps):
            x = X[rows, a["feature"][node]]
            nan = np.isnan(x)
            go_left = np.where(nan, a["missing_left"][node] == 1, x <= a["threshold"][node])
            node = np.where(go_left, a["left"][node], a["right"][node])
        return a["baseline"][0] + a["value"][node].sum(axis=1)

    def p_class1(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) = sigmoid(raw)."""
        r = self.raw(X)
        return 1.0 / (1.0 + np.exp(-r))
