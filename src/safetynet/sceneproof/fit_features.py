"""``safetynet sceneproof fit-features``: train the shipped feature model on all of ``rgbd/``.

The same rows, fakes, weights and threshold rule as every fold of the leave-one-source-out
evaluation (:mod:`.loso`), with every real source in training: the threshold comes from grouped
out-of-fold predictions over the sources. The model is written without pickle
(:class:`.feature_model.FeatureVerifier`); ``rgbd-heldout/`` is never read.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import DataError
from .feature_model import FeatureVerifier
from .loso_config import FitFeaturesConfig
from .loso_rows import REAL

log = logging.getLogger(__name__)

__all__ = ["fit_feature_model"]


def fit_feature_model(cfg: FitFeaturesConfig) -> dict[str, Any]:
    """Fit, choose the threshold, write the model folder ``cfg.out``; returns a summary."""
    from ..evaluation.report import config_record, environment_info
    from .bundle import SceneProof
    from .loso import fit_with_threshold
    from .loso_rows import load_frames, make_rows
    from .train import default_data_dir

    lcfg = cfg.loso()
    lcfg.validate()
    t0 = time.time()
    root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    rgbd = root / "rgbd"
    if not rgbd.is_dir():
        raise DataError(f"{rgbd} not found; pass --data-dir (or set SAFETYNET_DATA) to the folder holding rgbd/")
    size = (cfg.height, cfg.width_px)
    predictor = SceneProof.load(cfg.model).depth_regressor if "predicted_depth" in cfg.train_kinds else None
    fs, groups = load_frames(rgbd, size, cfg.max_frames)
    rows = make_rows(fs, groups, list(cfg.train_kinds), cfg.seed, predictor=predictor, donors=(fs, groups))
    model, thr = fit_with_threshold(rows, lcfg)
    real = rows.kind == REAL
    v = model.verdicts(rows.X, thr)
    env = environment_info()
    settings = {"threshold": thr, "min_valid": cfg.min_valid, "size": list(size), "train_kinds": list(cfg.train_kinds),
                "training": {"sources": sorted(set(groups)), "frames_per_source": {g: groups.count(g) for g in sorted(set(groups))},
                             "rows": len(rows), "config": config_record(cfg), "command": env["command"],
                             "git_commit": env["git_commit"], "scikit-learn": env["scikit-learn"],
                             "timestamp": env["timestamp"]},
                "note": "trained on all of rgbd/ (real) and fakes made from it; rgbd-heldout/ never read"}
    FeatureVerifier.save(cfg.out, model.clf_, settings)
    out = {"out": str(cfg.out), "threshold": thr, "rows": len(rows),
           "train_real_accepted": float((v[real] == REAL).mean()),
           "train_fakes_caught": float((v[~real] != REAL).mean()), "seconds": round(time.time() - t0, 1)}
    log.info("feature model written to %s: %s", cfg.out, out)
    return out
