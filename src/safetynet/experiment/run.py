"""The paper's type-I experiment (section 2.3, Figures 2-3) and ``safetynet demo``.

One typed entry point, :func:`run_experiment`, does everything the report shows:

1. load the classifier and the data; split the images into a detector-training part and a
   test part (seeded, stratified); keep the *natural* examples = clean images the classifier
   labels correctly (misclassified clean images are left out of detector training and of the
   detection metrics, and reported on their own: how many, and how often they are rejected);
2. attack both parts with every attack setting (FGSM, BIM-L∞, BIM-L2, DeepFool-L2,
   DeepFool-top-5, several ε); the *adversarial* examples of a setting are its successful
   attempts (the classifier is fooled on the clipped result);
3. read the tapped layer (the last residual stage, the paper's "x5") once per image set;
4. for each training setting fit the binary and quaternary code RBF-SVMs and the Metzen et al.
   subnetwork on natural vs adversarial training examples; score every test setting
   (cross-attack matrix); the confidence baseline needs no adversarial training data;
5. compute detection accuracy, ROC/AUC, TPR at 1 %/5 % FPR, adversary success and the
   paper's rates, draw the figures and write ``report.md`` + ``results.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._job import prepare_output
from ..errors import InputError
from .config import DETECTOR_TITLES, DETECTORS, AttackSetting, ExperimentConfig, attack_grid  # noqa: F401
from .splits import load_splits, stratified_order  # noqa: F401  (re-exported: the job's data selection)
from ..chunk_store import ChunkStore
from .summary import score_all, size_curve, summarise

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ units
def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass
class AttackOutcome:
    """One attack setting on one image set, assembled from its cached units."""

    y: np.ndarray  # (N,) true labels of the attacked natural images
    success: np.ndarray  # (N,) bool, re-checked on the clipped images
    pred: np.ndarray  # (N,) classifier labels on the clipped images
    logits: np.ndarray  # (N, K)
    l2: np.ndarray  # (N,) perturbation norms
    linf: np.ndarray
    codes: dict[str, np.ndarray]  # SVM kind -> uint8 codes (N, D) of every attempt
    maps: np.ndarray | None  # tapped-layer maps of the first rows (Metzen), None if none were kept
    seconds: float  # compute time of its units (one worker each), summed
    # ImageNet: whether the label left the clean image's top 5 (and its true label), for every
    # setting whatever its own criterion; the paper scores ImageNet classifiers both ways.
    success_top5: np.ndarray | None = None


class _Grid:
    """Runs units through the executor, reading finished ones from the cache; shows progress."""

    def __init__(self, store: ChunkStore, executor: Any, shared: tuple) -> None:
        self.store, self.executor, self.shared = store, executor, shared
        self.computed = 0
        self.cached = 0

    def run(self, kind: str, fn: Any, units: list[tuple[Any, tuple]], desc: str) -> list[dict[str, np.ndarray]]:
        """``units`` = [(cache key, args)]; returns the arrays of every unit, in order."""
        from ..progress import progress

        todo = [i for i, (key, _) in enumerate(units) if not self.store.has(kind, key)]
        self.cached += len(units) - len(todo)
        computed: dict[int, dict[str, np.ndarray]] = {}
        if todo:
            log.info("%s: %d units to compute, %d cached", desc, len(todo), len(units) - len(todo))
            it = self.executor.map(fn, [units[i][1] for i in todo], shared=self.shared)
            for j, arrays in progress(it, total=len(todo), desc=desc, unit="chunk"):
                self.store.put(kind, units[todo[j]][0], arrays)  # written as each unit finishes: resumable
                computed[todo[j]] = arrays
                self.computed += 1
        # only the cached units are read back; fresh ones are already in memory
        return [computed[i] if i in computed else self.store.get(kind, key) for i, (key, _) in enumerate(units)]


def _left_top5(clean_logits: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(N,) bool: the adversarial label is outside the clean top 5 and is not the true label."""
    top5 = np.argsort(-clean_logits, axis=1)[:, :5]
    return ~((top5 == pred[:, None]).any(1) | (pred == y))


def _assemble(parts: list[dict[str, np.ndarray]], y: np.ndarray) -> AttackOutcome:
    from .units import SVM_KINDS, unpack

    cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
    kept = [p["maps"] for p in parts if "maps" in p]
    return AttackOutcome(y=y, success=cat("success"), pred=cat("pred"), logits=cat("logits"), l2=cat("l2"),
                         linf=cat("linf"), codes={k: np.concatenate([unpack(p, k) for p in parts]) for k in SVM_KINDS},
                         maps=np.concatenate(kept) if kept else None,
                         seconds=float(sum(float(p["seconds"]) for p in parts if "seconds" in p)))


# ------------------------------------------------------------------------------------ phases
@dataclass
class _Naturals:
    """The clean images' split after the natural pass (positions into the train / test image sets)."""

    fit: np.ndarray  # natural training images the detectors are fitted on
    cal: np.ndarray  # natural training images held out to calibrate thresholds (never fitted on)
    test: np.ndarray  # natural test images
    miss: np.ndarray  # misclassified clean test images (reported apart)
    maps: dict[str, np.ndarray]  # tapped-layer maps of each part ("fit", "cal", "test", "miss")


def _natural_pass(grid: _Grid, base: dict[str, Any], cfg: ExperimentConfig, x_tr: torch.Tensor, idx_tr: np.ndarray,
                  x_te: torch.Tensor, idx_te: np.ndarray, device: str) -> dict[str, dict[str, np.ndarray]]:
    """Logits and tapped maps of every clean image, per part (cheap; cached like the rest)."""
    from .units import natural_chunk

    nat: dict[str, dict[str, np.ndarray]] = {}
    for part, x, idx in (("train", x_tr, idx_tr), ("test", x_te, idx_te)):
        units = [({**base, "split": part, "indices": idx[sl].tolist()}, (x[sl], cfg.layer, cfg.batch_size, device))
                 for sl in _chunks(len(x), cfg.chunk_size)]
        arrays = grid.run("natural", natural_chunk, units, f"natural ({part})")
        nat[part] = {k: np.concatenate([a[k] for a in arrays]) for k in ("logits", "maps")}
    return nat


def _split_naturals(cfg: ExperimentConfig, nat: dict[str, dict[str, np.ndarray]], ok_tr: np.ndarray,
                    ok_te: np.ndarray) -> _Naturals:
    """Natural training images -> a fit part (detectors) and a calibration part (thresholds only)."""
    natural = np.flatnonzero(ok_tr)
    rng = np.random.default_rng(cfg.seed)
    n_cal = max(1, int(round(cfg.calibration * len(natural))))
    if len(natural) - n_cal < 10:
        raise InputError(f"only {len(natural)} natural training images: too few to fit and calibrate; raise --n-train")
    cal = np.sort(rng.choice(natural, n_cal, replace=False))
    fit = np.setdiff1d(natural, cal)
    test, miss = np.flatnonzero(ok_te), np.flatnonzero(~ok_te)
    maps = {"fit": nat["train"]["maps"][fit], "cal": nat["train"]["maps"][cal], "test": nat["test"]["maps"][test],
            "miss": nat["test"]["maps"][miss]}
    return _Naturals(fit=fit, cal=cal, test=test, miss=miss, maps=maps)


def _attack_all(grid: _Grid, base: dict[str, Any], cfg: ExperimentConfig, settings: tuple[AttackSetting, ...],
                attack_sets: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
                clean_logits: dict[str, np.ndarray], thresholds: dict[str, np.ndarray], device: str
                ) -> dict[str, dict[str, AttackOutcome]]:
    """Every setting on the fit-part and test natural images, chunk by chunk: {setting: {part: outcome}}."""
    from .units import attack_chunk

    # All units of all settings go to the executor at once, so k workers stay busy across
    # settings instead of waiting at the end of each one (a setting's last chunks).
    units, spans = [], []
    for s in settings:
        for part, (x, y, idx) in attack_sets.items():
            start = len(units)
            for sl in _chunks(len(x), cfg.chunk_size):
                keep = part == "test" or sl.start < cfg.metzen_max_train
                key = {**base, "split": part, "indices": idx[sl].tolist(), "attack": s.attack, "eps": s.eps,
                       "params": dict(s.params), "top_k": s.top_k, "thresholds": thresholds, "pool": cfg.pool,
                       "pooled": cfg.pooled, "maps": keep}
                units.append((key, (s, x[sl], y[sl], cfg.layer, thresholds, cfg.pool, cfg.pooled, keep,
                                    cfg.batch_size, device)))
            spans.append((s, part, y, start, len(units)))
    parts = grid.run("attack", attack_chunk, units, f"attacks ({len(settings)} settings)")
    outcomes: dict[str, dict[str, AttackOutcome]] = {s.key: {} for s in settings}
    for s, part, y, start, stop in spans:
        outcomes[s.key][part] = _assemble(parts[start:stop], y.numpy())
        if cfg.dataset == "imagenet-val":
            outcomes[s.key][part].success_top5 = _left_top5(clean_logits[part], y.numpy(), outcomes[s.key][part].pred)
    for s in settings:
        log.info("%s: success train %.3f test %.3f", s.label, outcomes[s.key]["train"].success.mean(),
                 outcomes[s.key]["test"].success.mean())
    return outcomes


def _fit_detectors(executor: Any, model: torch.nn.Module, cfg: ExperimentConfig, usable: list[AttackSetting],
                   outcomes: dict[str, dict[str, AttackOutcome]], nat_codes: dict[str, Any], naturals: _Naturals
                   ) -> dict[tuple[str, str], Any]:
    """The SVMs (every code kind) and the Metzen subnetwork of every usable training setting, as executor units."""
    from ..progress import progress
    from .units import SVM_KINDS, fit_metzen, fit_svm

    n_fit = len(naturals.fit)
    svm_units, svm_keys = [], []
    for s in usable:
        tr = outcomes[s.key]["train"]
        for kind, lv in SVM_KINDS.items():
            X = np.concatenate([nat_codes["fit"][kind], tr.codes[kind][tr.success]])
            yb = np.r_[np.zeros(n_fit, dtype=int), np.ones(int(tr.success.sum()), dtype=int)]
            svm_units.append((X, yb, cfg.svm_params(lv)))
            svm_keys.append((s.key, kind))
    fitted: dict[tuple[str, str], Any] = {}
    for i, det in progress(executor.map(fit_svm, svm_units), total=len(svm_units), desc="SVM detectors", unit="fit"):
        fitted[svm_keys[i]] = det
    del svm_units
    n_metzen = min(n_fit, cfg.metzen_max_train)
    met_units = []
    for s in usable:
        tr = outcomes[s.key]["train"]
        adv_maps = tr.maps[tr.success[:len(tr.maps)]][:cfg.metzen_max_train]
        met_units.append((model, cfg.layer, cfg.metzen_epochs, cfg.seed, naturals.maps["fit"][:n_metzen], adv_maps))
    for i, det in progress(executor.map(fit_metzen, met_units), total=len(met_units), desc="Metzen detectors",
                           unit="fit"):
        fitted[usable[i].key, "metzen"] = det
    return fitted


def _score_detectors(cfg: ExperimentConfig, settings: tuple[AttackSetting, ...], usable: list[AttackSetting],
                     outcomes: dict[str, dict[str, AttackOutcome]], nat_codes: dict[str, Any], naturals: _Naturals,
                     fitted: dict[tuple[str, str], Any]) -> tuple[dict, dict, dict]:
    """(scores, fitted parameters, thresholds at cfg.fpr) of every detector on every evaluation set."""
    from ..metrics import threshold_at_fpr
    from .units import SVM_KINDS

    def svm_sets(kind: str) -> dict[str, Any]:
        return {"natural": nat_codes["test"][kind], "cal": nat_codes["cal"][kind],
                "miss": nat_codes["miss"][kind] if nat_codes["miss"] is not None else None,
                "adv": {t.key: outcomes[t.key]["test"].codes[kind][outcomes[t.key]["test"].success] for t in settings},
                "all": {t.key: outcomes[t.key]["test"].codes[kind] for t in settings}}

    maps = naturals.maps
    met_sets = {"natural": maps["test"], "cal": maps["cal"], "miss": maps["miss"] if len(maps["miss"]) else None,
                "adv": {t.key: outcomes[t.key]["test"].maps[outcomes[t.key]["test"].success] for t in settings},
                "all": {t.key: outcomes[t.key]["test"].maps for t in settings}}
    scores: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DETECTORS}
    fitted_params: dict[str, dict[str, Any]] = {d: {} for d in DETECTORS}
    thresholds_at_fpr: dict[str, dict[str, float]] = {d: {} for d in DETECTORS}
    n_metzen = min(len(naturals.fit), cfg.metzen_max_train)
    for s in usable:
        for kind in SVM_KINDS:
            det = fitted[s.key, kind]
            fitted_params[kind][s.key] = {"gamma": det.gamma_, "sigma": det.sigma_, "C": det.C_, "solver": det.solver_,
                                          "support_vectors": int(len(det.support_vectors_)),
                                          "code_units": int(det.n_features_in_),
                                          "train_natural": int(len(naturals.fit)),
                                          "train_adversarial": int(outcomes[s.key]["train"].success.sum())}
            scores[kind][s.key] = score_all(det.decision_function, svm_sets(kind), settings)
        met = fitted[s.key, "metzen"]
        fitted_params["metzen"][s.key] = {"epochs": cfg.metzen_epochs, "train_natural": int(n_metzen)}
        scores["metzen"][s.key] = score_all(lambda m, det=met: det.decision_function_from_activations(torch.from_numpy(m)),
                                            met_sets, settings)
        for d in DETECTORS:
            thresholds_at_fpr[d][s.key] = threshold_at_fpr(scores[d][s.key]["calibration"], cfg.fpr)
    return scores, fitted_params, thresholds_at_fpr


# ------------------------------------------------------------------------------------ main job
def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run the whole experiment; writes ``report.md``, ``results.json`` and figures to ``cfg.out``.

    Attacks and codes are computed in chunks (``cfg.chunk_size`` images) on the executor that
    ``cfg.workers`` / ``cfg.ray`` / ``cfg.ray_address`` ask for, each chunk cached in
    ``cfg.cache`` (default ``out/cache``) as it finishes: an interrupted run resumes where it
    stopped, with identical results.
    """
    from ..codes import ActivationQuantizer
    from ..detectors.confidence import ConfidenceDetector
    from ..evaluation.task import resolve_classifier
    from ..executors import make_executor
    from .report import write_experiment_report
    from ..chunk_store import model_fingerprint
    from .units import SVM_KINDS, code_features, codes_of

    cfg.validate()
    t_start = time.time()
    out = prepare_output(cfg.out)
    store = ChunkStore(cfg.cache or out / "cache")
    device = cfg.resolved_device()
    settings = attack_grid(cfg.grid)
    model, model_source, _ = resolve_classifier(cfg.model, cfg.dataset)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_tr, y_tr, x_te, y_te, provenance = load_splits(cfg)
    idx_tr, idx_te = np.asarray(provenance["train_indices"]), np.asarray(provenance["test_indices"])
    base = {"model": model_fingerprint(model), "layer": cfg.layer, "dataset": cfg.dataset}
    executor = make_executor(cfg.workers, cfg.ray, cfg.ray_address, threads=1,
                             gpus_per_task=1 if device == "cuda" and (cfg.ray or cfg.ray_address) else 0)
    execution = executor.describe()
    try:
        grid = _Grid(store, executor, (model,))
        # 1. natural pass, 2. natural fit / calibration / test parts
        nat = _natural_pass(grid, base, cfg, x_tr, idx_tr, x_te, idx_te, device)
        ok_tr = nat["train"]["logits"].argmax(1) == y_tr.numpy()
        ok_te = nat["test"]["logits"].argmax(1) == y_te.numpy()
        clean = {"train_images": len(y_tr), "test_images": len(y_te),
                 "train_accuracy": float(ok_tr.mean()), "test_accuracy": float(ok_te.mean())}
        log.info("clean accuracy train %.3f test %.3f", clean["train_accuracy"], clean["test_accuracy"])
        naturals = _split_naturals(cfg, nat, ok_tr, ok_te)
        del nat["train"]["maps"], nat["test"]["maps"]

        # 3. quantizers on the fit part's natural activations; every set's codes use them.
        fit_maps = torch.from_numpy(naturals.maps["fit"])
        quantizers = {k: ActivationQuantizer(levels=lv).fit(code_features(fit_maps, k, cfg.pool, cfg.pooled))
                      for k, lv in SVM_KINDS.items()}
        thresholds = {k: q.thresholds_ for k, q in quantizers.items()}
        nat_codes = {part: codes_of(torch.from_numpy(m), quantizers, cfg.pool, cfg.pooled) if len(m) else None
                     for part, m in naturals.maps.items()}

        # 4. attacks on the fit-part and test natural images, every setting.
        fit_pos, te_pos = naturals.fit, naturals.test
        attack_sets = {"train": (x_tr[fit_pos], y_tr[fit_pos], idx_tr[fit_pos]),
                       "test": (x_te[te_pos], y_te[te_pos], idx_te[te_pos])}
        clean_logits = {"train": nat["train"]["logits"][fit_pos], "test": nat["test"]["logits"][te_pos]}
        outcomes = _attack_all(grid, base, cfg, settings, attack_sets, clean_logits, thresholds, device)

        # 5. detectors per usable training setting (units too).
        usable = [s for s in settings
                  if outcomes[s.key]["train"].success.sum() >= 10 and outcomes[s.key]["test"].success.sum() >= 5]
        fitted = _fit_detectors(executor, model, cfg, usable, outcomes, nat_codes, naturals)
    finally:
        executor.close()

    # 6. scores of every test set, the confidence baseline, the summary and the report.
    scores, fitted_params, thresholds_at_fpr = _score_detectors(cfg, settings, usable, outcomes, nat_codes, naturals,
                                                               fitted)
    conf = ConfidenceDetector(target_fpr=cfg.fpr).fit(nat["train"]["logits"][naturals.cal])
    conf_scores = {"natural": conf.decision_function(nat["test"]["logits"][naturals.test]), "adversarial": {}}
    for s in settings:
        o = outcomes[s.key]["test"]
        conf_scores["adversarial"][s.key] = conf.decision_function(o.logits[o.success]) if o.success.any() else np.zeros(0)

    results = summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean,
                        thresholds_at_fpr)
    if cfg.size_curve:
        results["size_curve"] = size_curve(cfg, [s for s in usable if s.key in cfg.size_curve_attacks], outcomes,
                                           nat_codes)
    results["skipped_train_settings"] = [s.key for s in settings if s not in usable]
    results["provenance"] = {k: v for k, v in provenance.items() if not k.endswith("indices")}
    results["provenance"].update({"natural_fit": int(len(naturals.fit)), "natural_calibration": int(len(naturals.cal)),
                                  "natural_test": int(len(naturals.test)), "misclassified_test": int(len(naturals.miss))})
    results["model"] = model_source
    results["execution"] = {**execution, "device": device, "cache": str(store.root),
                            "units_computed": grid.computed, "units_cached": grid.cached, "chunk_size": cfg.chunk_size}
    results["seconds"] = round(time.time() - t_start, 1)
    write_experiment_report(out, cfg, results, settings, usable, scores, conf_scores, provenance)
    log.info("report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results
