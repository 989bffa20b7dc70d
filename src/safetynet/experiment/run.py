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
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._job import prepare_output
from ..errors import InputError
from .store import ChunkStore
from .config import DETECTOR_TITLES, DETECTORS, AttackSetting, ExperimentConfig, attack_grid  # noqa: F401

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ data
def _stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation that interleaves classes, so any prefix is close to balanced."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    rank = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        members = perm[labels[perm] == c]
        rank[members] = torch.arange(len(members))
    # Sort by (rank within class, random tiebreak) -> round-robin over classes.
    key = rank.double() + torch.rand(len(labels), generator=g, dtype=torch.float64) * 0.5
    return torch.argsort(key)


def load_splits(cfg: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Images and labels for detector training and testing, plus a provenance dict."""
    from ..data import load_dataset

    if cfg.dataset == "cifar10-sample":
        data = load_dataset("cifar10-sample", "test")
        order = _stratified_order(data.labels, cfg.seed)
        n_train = cfg.n_train or len(data) // 2
        n_test = cfg.n_test or len(data) - n_train
        if n_train + n_test > len(data):
            raise InputError(f"n_train + n_test = {n_train + n_test} exceeds the {len(data)} images of the embedded sample")
        tr, te = order[:n_train], order[n_train:n_train + n_test]
        prov = {"dataset": "CIFAR-10 embedded sample (1,000 test images, JPEG copy)", "train_from": "sample",
                "test_from": "sample (disjoint)", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return data.images[tr], data.labels[tr], data.images[te], data.labels[te], prov
    if cfg.dataset in ("cifar10", "digits"):
        train = load_dataset(cfg.dataset, "train", cfg.data_dir)
        test = load_dataset(cfg.dataset, "test", cfg.data_dir)
        n_train = cfg.n_train or min(2000, len(train))
        n_test = cfg.n_test or min(1000, len(test))
        if n_train > len(train) or n_test > len(test):
            raise InputError(f"n_train={n_train} / n_test={n_test} exceed the data ({len(train)} / {len(test)} images)")
        tr = _stratified_order(train.labels, cfg.seed)[:n_train]
        te = _stratified_order(test.labels, cfg.seed + 1)[:n_test]
        name = "CIFAR-10 (JPEG copy)" if cfg.dataset == "cifar10" else "scikit-learn digits (8x8)"
        prov = {"dataset": name, "data_dir": str(cfg.data_dir), "train_from": f"{name} train split",
                "test_from": f"{name} test split", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return (train.images_u8[tr].float() / 255, train.labels[tr], test.images_u8[te].float() / 255, test.labels[te], prov)
    if cfg.dataset == "imagenet-val":
        from ..data.imagenet import TEST_IMAGES, TRAIN_IMAGES, imagenet_split

        data = load_dataset("imagenet-val", "all", cfg.data_dir)
        quick = (60, 40) if cfg.quick else (TRAIN_IMAGES, TEST_IMAGES)
        n_train, n_test = cfg.n_train or quick[0], cfg.n_test or quick[1]
        # One folder of validation images, split by image (seeded): ~1/40 of the paper's scale.
        tr, te = imagenet_split(len(data), n_train, n_test, cfg.seed)
        prov = {"dataset": f"ImageNet validation images ({len(data)} in {cfg.data_dir}, 224x224 centre crops)",
                "data_dir": str(cfg.data_dir), "train_from": "ImageNet folder (seeded split by image)",
                "test_from": "ImageNet folder (disjoint images)", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return data.images_u8[tr].float() / 255, data.labels[tr], data.images_u8[te].float() / 255, data.labels[te], prov
    raise InputError(f"demo dataset must be 'cifar10-sample', 'cifar10', 'digits' or 'imagenet-val', got {cfg.dataset!r}")


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
    from ..metrics import threshold_at_fpr
    from ..progress import progress
    from .store import ChunkStore, model_fingerprint
    from .units import SVM_KINDS, attack_chunk, code_features, codes_of, fit_metzen, fit_svm, natural_chunk

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
    model_id = model_fingerprint(model)
    x_tr, y_tr, x_te, y_te, provenance = load_splits(cfg)
    idx_tr, idx_te = np.asarray(provenance["train_indices"]), np.asarray(provenance["test_indices"])
    base = {"model": model_id, "layer": cfg.layer, "dataset": cfg.dataset}
    executor = make_executor(cfg.workers, cfg.ray, cfg.ray_address, threads=1,
                             gpus_per_task=1 if device == "cuda" and (cfg.ray or cfg.ray_address) else 0)
    execution = executor.describe()
    try:
        grid = _Grid(store, executor, (model,))
        # 1. natural pass: logits and maps of every clean image (cheap; cached like the rest).
        nat: dict[str, dict[str, np.ndarray]] = {}
        for part, x, idx in (("train", x_tr, idx_tr), ("test", x_te, idx_te)):
            units = [({**base, "split": part, "indices": idx[sl].tolist()}, (x[sl], cfg.layer, cfg.batch_size, device))
                     for sl in _chunks(len(x), cfg.chunk_size)]
            arrays = grid.run("natural", natural_chunk, units, f"natural ({part})")
            nat[part] = {k: np.concatenate([a[k] for a in arrays]) for k in ("logits", "maps")}
        pred_tr, pred_te = nat["train"]["logits"].argmax(1), nat["test"]["logits"].argmax(1)
        ok_tr, ok_te = pred_tr == y_tr.numpy(), pred_te == y_te.numpy()
        clean = {"train_images": len(y_tr), "test_images": len(y_te),
                 "train_accuracy": float(ok_tr.mean()), "test_accuracy": float(ok_te.mean())}
        log.info("clean accuracy train %.3f test %.3f", clean["train_accuracy"], clean["test_accuracy"])

        # 2. natural training images -> a fit part (detectors) and a calibration part (thresholds only).
        natural = np.flatnonzero(ok_tr)
        rng = np.random.default_rng(cfg.seed)
        n_cal = max(1, int(round(cfg.calibration * len(natural))))
        if len(natural) - n_cal < 10:
            raise InputError(f"only {len(natural)} natural training images: too few to fit and calibrate; "
                             "raise --n-train")
        cal_pos = np.sort(rng.choice(natural, n_cal, replace=False))
        fit_pos = np.setdiff1d(natural, cal_pos)
        nat_te_pos, miss_te_pos = np.flatnonzero(ok_te), np.flatnonzero(~ok_te)
        maps = {"fit": nat["train"]["maps"][fit_pos], "cal": nat["train"]["maps"][cal_pos],
                "test": nat["test"]["maps"][nat_te_pos], "miss": nat["test"]["maps"][miss_te_pos]}
        del nat["train"]["maps"], nat["test"]["maps"]

        # 3. quantizers on the fit part's natural activations; every set's codes use them.
        quantizers = {k: ActivationQuantizer(levels=lv).fit(code_features(torch.from_numpy(maps["fit"]), k, cfg.pool, cfg.pooled))
                      for k, lv in SVM_KINDS.items()}
        thresholds = {k: q.thresholds_ for k, q in quantizers.items()}
        nat_codes = {part: codes_of(torch.from_numpy(m), quantizers, cfg.pool, cfg.pooled) if len(m) else None
                     for part, m in maps.items()}

        # 4. attacks: fit-part and test natural images, chunk by chunk, every setting.
        attack_sets = {"train": (x_tr[fit_pos], y_tr[fit_pos], idx_tr[fit_pos]),
                       "test": (x_te[nat_te_pos], y_te[nat_te_pos], idx_te[nat_te_pos])}
        clean_logits = {"train": nat["train"]["logits"][fit_pos], "test": nat["test"]["logits"][nat_te_pos]}
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
                outcomes[s.key][part].success_top5 = _left_top5(clean_logits[part], y.numpy(),
                                                                outcomes[s.key][part].pred)
        del parts
        for s in settings:
            log.info("%s: success train %.3f test %.3f", s.label, outcomes[s.key]["train"].success.mean(),
                     outcomes[s.key]["test"].success.mean())

        # 5. detectors per training setting (units too), then scores of every test set.
        usable = [s for s in settings
                  if outcomes[s.key]["train"].success.sum() >= 10 and outcomes[s.key]["test"].success.sum() >= 5]
        skipped = [s.key for s in settings if s not in usable]
        svm_units, svm_keys = [], []
        for s in usable:
            tr = outcomes[s.key]["train"]
            for kind, lv in SVM_KINDS.items():
                X = np.concatenate([nat_codes["fit"][kind], tr.codes[kind][tr.success]])
                yb = np.r_[np.zeros(len(fit_pos), dtype=int), np.ones(int(tr.success.sum()), dtype=int)]
                svm_units.append((X, yb, cfg.svm_params(lv)))
                svm_keys.append((s.key, kind))
        fitted: dict[tuple[str, str], Any] = {}
        for i, det in progress(executor.map(fit_svm, svm_units), total=len(svm_units), desc="SVM detectors", unit="fit"):
            fitted[svm_keys[i]] = det
        del svm_units
        n_metzen = min(len(fit_pos), cfg.metzen_max_train)
        met_units = []
        for s in usable:
            tr = outcomes[s.key]["train"]
            adv_maps = tr.maps[tr.success[:len(tr.maps)]][:cfg.metzen_max_train]
            met_units.append((model, cfg.layer, cfg.metzen_epochs, cfg.seed, maps["fit"][:n_metzen], adv_maps))
        for i, det in progress(executor.map(fit_metzen, met_units), total=len(met_units), desc="Metzen detectors",
                               unit="fit"):
            fitted[usable[i].key, "metzen"] = det
        del met_units
    finally:
        executor.close()

    def svm_sets(kind: str) -> dict[str, Any]:
        return {"natural": nat_codes["test"][kind], "cal": nat_codes["cal"][kind],
                "miss": nat_codes["miss"][kind] if nat_codes["miss"] is not None else None,
                "adv": {t.key: outcomes[t.key]["test"].codes[kind][outcomes[t.key]["test"].success] for t in settings},
                "all": {t.key: outcomes[t.key]["test"].codes[kind] for t in settings}}

    met_sets = {"natural": maps["test"], "cal": maps["cal"], "miss": maps["miss"] if len(maps["miss"]) else None,
                "adv": {t.key: outcomes[t.key]["test"].maps[outcomes[t.key]["test"].success] for t in settings},
                "all": {t.key: outcomes[t.key]["test"].maps for t in settings}}
    scores: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DETECTORS}
    fitted_params: dict[str, dict[str, Any]] = {d: {} for d in DETECTORS}
    thresholds_at_fpr: dict[str, dict[str, float]] = {d: {} for d in DETECTORS}
    for s in usable:
        for kind in SVM_KINDS:
            det = fitted[s.key, kind]
            fitted_params[kind][s.key] = {"gamma": det.gamma_, "sigma": det.sigma_, "C": det.C_, "solver": det.solver_,
                                          "support_vectors": int(len(det.support_vectors_)),
                                          "code_units": int(det.n_features_in_),
                                          "train_natural": int(len(fit_pos)),
                                          "train_adversarial": int(outcomes[s.key]["train"].success.sum())}
            scores[kind][s.key] = _score_all(det.decision_function, svm_sets(kind), settings)
        met = fitted[s.key, "metzen"]
        fitted_params["metzen"][s.key] = {"epochs": cfg.metzen_epochs, "train_natural": int(n_metzen)}
        scores["metzen"][s.key] = _score_all(lambda m, det=met: det.decision_function_from_activations(torch.from_numpy(m)),
                                             met_sets, settings)
        for d in DETECTORS:
            thresholds_at_fpr[d][s.key] = threshold_at_fpr(scores[d][s.key]["calibration"], cfg.fpr)

    # Confidence baseline: threshold at cfg.fpr on the calibration naturals' logits.
    conf = ConfidenceDetector(target_fpr=cfg.fpr).fit(nat["train"]["logits"][cal_pos])
    conf_scores = {"natural": conf.decision_function(nat["test"]["logits"][nat_te_pos]), "adversarial": {}}
    for s in settings:
        o = outcomes[s.key]["test"]
        conf_scores["adversarial"][s.key] = conf.decision_function(o.logits[o.success]) if o.success.any() else np.zeros(0)

    results = _summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean,
                         thresholds_at_fpr)
    if cfg.size_curve:
        results["size_curve"] = _size_curve(cfg, [s for s in usable if s.key in cfg.size_curve_attacks], outcomes,
                                            nat_codes)
    results["skipped_train_settings"] = skipped
    results["provenance"] = {k: v for k, v in provenance.items() if not k.endswith("indices")}
    results["provenance"].update({"natural_fit": int(len(fit_pos)), "natural_calibration": int(len(cal_pos)),
                                  "natural_test": int(len(nat_te_pos)), "misclassified_test": int(len(miss_te_pos))})
    results["model"] = model_source
    results["execution"] = {**execution, "device": device, "cache": str(store.root),
                            "units_computed": grid.computed, "units_cached": grid.cached, "chunk_size": cfg.chunk_size}
    results["seconds"] = round(time.time() - t_start, 1)
    from .report import write_experiment_report

    write_experiment_report(out, cfg, results, settings, usable, scores, conf_scores, provenance)
    log.info("report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results


def _size_curve(cfg: ExperimentConfig, settings, outcomes, nat_codes) -> list[dict[str, Any]]:
    """Binary-code SVM trained on the first n natural + n adversarial training examples, for each n.

    Prefixes of the stratified order, so every size is class-balanced and each contains the
    smaller ones; the test set and the calibration images are the same for every n.
    """
    from ..metrics import detection_metrics, threshold_at_fpr
    from .units import fit_svm

    kind, rows = "svm-binary", []
    nat_fit = nat_codes["fit"][kind]
    for s in settings:
        o_tr, o_te = outcomes[s.key]["train"], outcomes[s.key]["test"]
        adv_fit, adv_te = o_tr.codes[kind][o_tr.success], o_te.codes[kind][o_te.success]
        for n in sorted(cfg.size_curve):
            if n > min(len(nat_fit), len(adv_fit)):
                rows.append({"attack": s.key, "label": s.label, "n_per_class": n, "available": False,
                             "natural_available": int(len(nat_fit)), "adversarial_available": int(len(adv_fit))})
                continue
            t0 = time.time()
            det = fit_svm(np.concatenate([nat_fit[:n], adv_fit[:n]]), np.r_[np.zeros(n, int), np.ones(n, int)],
                          cfg.svm_params(2))
            fit_s = time.time() - t0
            nat_s, adv_s = det.decision_function(nat_codes["test"][kind]), det.decision_function(adv_te)
            t = threshold_at_fpr(det.decision_function(nat_codes["cal"][kind]), cfg.fpr)
            dm, cal = detection_metrics(nat_s, adv_s, 0.0), detection_metrics(nat_s, adv_s, t)
            rows.append({"attack": s.key, "label": s.label, "n_per_class": n, "available": True, "auc": dm.auc,
                         "tpr_at_5fpr": dm.tpr_at_5fpr, "balanced_accuracy": dm.balanced_accuracy,
                         "calibrated_tpr": cal.tpr, "calibrated_fpr": cal.fpr, "gamma": det.gamma_, "C": det.C_,
                         "solver": getattr(det, "solver_", "exact"), "fit_seconds": round(fit_s, 2)})
            log.info("size curve %s n=%d: AUC %.3f (fit %.1f s)", s.label, n, dm.auc, fit_s)
    return rows


def _score_all(score_fn, sets: dict[str, Any], settings) -> dict[str, Any]:
    """Scores of one fitted detector on every evaluation set (an array or None per set).

    ``natural``: natural test images; ``calibration``: held-out natural training images (the
    threshold at the target FPR is read from these); ``misclassified_clean``: clean test images the
    classifier gets wrong; ``adversarial[key]``: successful attacks; ``all_attempts[key]``: every
    attempt (the paper's rates count them all).
    """
    def score(v) -> np.ndarray:
        return np.asarray(score_fn(v), dtype=float) if v is not None and len(v) else np.zeros(0)

    return {"natural": score(sets["natural"]), "calibration": score(sets["cal"]),
            "misclassified_clean": score(sets["miss"]),
            "adversarial": {t.key: score(sets["adv"][t.key]) for t in settings},
            "all_attempts": {t.key: score(sets["all"][t.key]) for t in settings}}


def _summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean,
               thresholds_at_fpr) -> dict[str, Any]:
    from ..cross_attack import cross_attack_matrix
    from ..metrics import detection_metrics, safetynet_rates
    from ..evaluation.report import config_record

    def median(v: np.ndarray) -> float:
        return float(np.median(v)) if len(v) else math.nan

    attacks = []
    for s in settings:
        te, tr = outcomes[s.key]["test"], outcomes[s.key]["train"]
        ok = te.success
        attacks.append({
            "key": s.key, "label": s.label, "family": s.family, "eps": s.eps, "params": dict(s.params), "top_k": s.top_k,
            "success_rate_test": float(ok.mean()), "success_rate_train": float(tr.success.mean()),
            "adversarial_test": int(ok.sum()), "adversarial_train": int(tr.success.sum()),
            "median_l2": median(te.l2[ok]), "median_linf": median(te.linf[ok]),
            "seconds": round(te.seconds + tr.seconds, 1),
        })
        if te.success_top5 is not None:
            attacks[-1].update({"success_rate_test_top1": float((te.pred != te.y).mean()),
                                "success_rate_test_top5": float(te.success_top5.mean()),
                                "median_l2_top5": median(te.l2[te.success_top5])})
    keys = [s.key for s in usable]

    def operating_point(sc: dict[str, Any], key: str, threshold: float) -> dict[str, Any]:
        """Detection and the paper's rates at one threshold (> threshold = rejected)."""
        dm = detection_metrics(sc["natural"], sc["adversarial"][key], threshold=threshold)
        o = outcomes[key]["test"]
        rates = safetynet_rates(o.y, o.pred, sc["all_attempts"][key] > threshold)
        return {"threshold": float(threshold), "accuracy": dm.accuracy, "balanced_accuracy": dm.balanced_accuracy,
                "tpr": dm.tpr, "fpr": dm.fpr, **rates}

    detectors: dict[str, Any] = {}
    for d in DETECTORS:
        same = []
        for s in usable:
            sc = scores[d][s.key]
            zero = operating_point(sc, s.key, 0.0)
            cal = operating_point(sc, s.key, thresholds_at_fpr[d][s.key])
            dm = detection_metrics(sc["natural"], sc["adversarial"][s.key], threshold=0.0)
            same.append({"attack": s.key, "label": s.label, "auc": dm.auc, "tpr_at_1fpr": dm.tpr_at_1fpr,
                         "tpr_at_5fpr": dm.tpr_at_5fpr,
                         "adversary_success": float(outcomes[s.key]["test"].success.mean()),
                         **{k: v for k, v in zero.items() if k != "threshold"},
                         "calibrated": cal, **fitted_params[d].get(s.key, {})})
        matrix = cross_attack_matrix({s.key: {t.key: (scores[d][s.key]["natural"], scores[d][s.key]["adversarial"][t.key])
                                              for t in usable} for s in usable}) if usable else None
        cross = {"train": keys, "test": keys, **({m: matrix[m].tolist() for m in ("auc", "balanced_accuracy", "tpr_at_5fpr")}
                                                 if matrix is not None else {})}
        nat = scores[d][usable[0].key]["natural"] if usable else np.zeros(0)

        def rejected(v: np.ndarray, t: float) -> float:
            return float((v > t).mean()) if len(v) else math.nan

        detectors[d] = {
            "title": DETECTOR_TITLES[d], "same_attack": same, "cross_attack": cross,
            "natural_false_rejection": {s.key: rejected(scores[d][s.key]["natural"], 0.0) for s in usable},
            "natural_false_rejection_calibrated": {s.key: rejected(scores[d][s.key]["natural"], thresholds_at_fpr[d][s.key])
                                                   for s in usable},
            "misclassified_clean_rejected": {s.key: rejected(scores[d][s.key]["misclassified_clean"], 0.0) for s in usable},
            "misclassified_clean_rejected_calibrated": {
                s.key: rejected(scores[d][s.key]["misclassified_clean"], thresholds_at_fpr[d][s.key]) for s in usable},
            "natural_test_examples": int(len(nat))}
    conf_rows = []
    for s in settings:
        adv = conf_scores["adversarial"][s.key]
        if len(adv) >= 1:
            dm = detection_metrics(conf_scores["natural"], adv, threshold=float(conf.threshold_))
            conf_rows.append({"attack": s.key, "label": s.label, "auc": dm.auc, "tpr": dm.tpr, "fpr": dm.fpr,
                              "tpr_at_5fpr": dm.tpr_at_5fpr, "balanced_accuracy": dm.balanced_accuracy})
    return {"config": config_record(cfg), "clean": clean, "attacks": attacks, "detectors": detectors,
            "operating_point": {"fpr": cfg.fpr, "calibrated_on": "held-out natural training images"},
            "confidence_baseline": {"threshold": float(conf.threshold_), "rows": conf_rows}}
