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
from torch import nn

from ..attacks.batched import attack_in_batches, predict
from .._job import prepare_output
from ..errors import InputError
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
    raise InputError(f"demo dataset must be 'cifar10-sample', 'cifar10' or 'digits', got {cfg.dataset!r}")


# ------------------------------------------------------------------------------------ attacks
@dataclass
class AttackOutcome:
    """Attack results on one image set: the clipped adversarials and the success mask."""

    adversarial: torch.Tensor  # (N, C, H, W) clipped
    y: torch.Tensor  # (N,) the true labels of the attacked images
    success: torch.Tensor  # (N,) bool, re-checked on the clipped images
    pred: torch.Tensor  # (N,) classifier labels on the adversarials
    l2: torch.Tensor  # (N,) perturbation norms
    linf: torch.Tensor
    seconds: float


def run_attack(model: nn.Module, setting: AttackSetting, x: torch.Tensor, y: torch.Tensor,
               batch_size: int, desc: str) -> AttackOutcome:
    from ..attacks import Misclassification, TopKMisclassification

    def goal(yb: torch.Tensor):
        return TopKMisclassification(yb, k=setting.top_k) if setting.top_k else Misclassification(yb)

    t0 = time.time()
    res = attack_in_batches(setting.build(), model, x, y, goal, eps=setting.eps, batch_size=batch_size, desc=desc)
    pred, _ = predict(model, res.clipped, batch_size)
    delta = (res.clipped - x).flatten(1)
    return AttackOutcome(res.clipped, y, res.success, pred, delta.norm(dim=1), delta.abs().amax(dim=1), time.time() - t0)


# ------------------------------------------------------------------------------------ main job
def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run the whole experiment; writes ``report.md``, ``results.json`` and figures to ``cfg.out``."""
    from ..codes import ActivationQuantizer, layer_activations
    from ..detectors import CodeSVMDetector
    from ..detectors.confidence import ConfidenceDetector
    from ..detectors.metzen import MetzenDetector
    from ..evaluation.task import resolve_classifier
    from ..progress import progress
    from ..taps import extract_activations

    cfg.validate()
    t_start = time.time()
    out = prepare_output(cfg.out)
    settings = attack_grid(cfg.grid)
    model, model_source, _ = resolve_classifier(cfg.model, cfg.dataset)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_tr, y_tr, x_te, y_te, provenance = load_splits(cfg)

    # Natural examples: clean images the classifier gets right.
    pred_tr, logits_tr = predict(model, x_tr)
    pred_te, logits_te = predict(model, x_te)
    ok_tr, ok_te = pred_tr == y_tr, pred_te == y_te
    clean = {"train_images": len(y_tr), "test_images": len(y_te),
             "train_accuracy": float(ok_tr.float().mean()), "test_accuracy": float(ok_te.float().mean())}
    xn_tr, yn_tr = x_tr[ok_tr], y_tr[ok_tr]
    xn_te, yn_te = x_te[ok_te], y_te[ok_te]
    x_miss_te = x_te[~ok_te]
    log.info("clean accuracy train %.3f test %.3f", clean["train_accuracy"], clean["test_accuracy"])

    # Attacks: only natural examples are attacked (an already-misclassified image is no attack).
    outcomes: dict[str, dict[str, AttackOutcome]] = {}
    for s in progress(settings, desc="attacks"):
        outcomes[s.key] = {
            "train": run_attack(model, s, xn_tr, yn_tr, cfg.batch_size, f"{s.label} (train)"),
            "test": run_attack(model, s, xn_te, yn_te, cfg.batch_size, f"{s.label} (test)"),
        }
        log.info("%s: success train %.3f test %.3f (%.1f s)", s.label, float(outcomes[s.key]["train"].success.float().mean()),
                 float(outcomes[s.key]["test"].success.float().mean()),
                 outcomes[s.key]["train"].seconds + outcomes[s.key]["test"].seconds)

    # Activations of the tapped layer, read once per image set (pooled for the SVM codes,
    # full maps for the Metzen subnetwork).
    def acts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, maps = extract_activations(model, x, [cfg.layer], flatten=False)
        m = maps[cfg.layer]
        flat = layer_activations(model, x, [cfg.layer], cfg.pool)[cfg.layer] if cfg.pool else m.flatten(1)
        return flat, m

    def pooled(maps: torch.Tensor) -> torch.Tensor:
        if maps.ndim != 4:  # a fully connected layer: nothing to pool
            return maps.flatten(1)
        return torch.nn.functional.adaptive_avg_pool2d(maps, cfg.pooled).flatten(1)

    nat_tr_flat, nat_tr_maps = acts(xn_tr)
    nat_te_flat, nat_te_maps = acts(xn_te)
    miss_te_flat, miss_te_maps = acts(x_miss_te) if len(x_miss_te) else (None, None)
    adv_flat: dict[tuple[str, str], torch.Tensor] = {}
    adv_maps: dict[tuple[str, str], torch.Tensor] = {}
    all_te_flat: dict[str, torch.Tensor] = {}
    all_te_maps: dict[str, torch.Tensor] = {}
    for s in settings:
        for part in ("train", "test"):
            o = outcomes[s.key][part]
            f, m = acts(o.adversarial)
            if part == "test":
                all_te_flat[s.key], all_te_maps[s.key] = f, m  # every attempt, for the Table-1 rates
            adv_flat[s.key, part], adv_maps[s.key, part] = f[o.success], m[o.success]

    # Each SVM detector: (code levels, activations -> features it quantizes).
    svm_kinds = {"svm-binary": (2, lambda flat, maps: flat), "svm-quaternary": (4, lambda flat, maps: flat),
                 "svm-pooled": (4, lambda flat, maps: pooled(maps))}
    quantizers = {name: ActivationQuantizer(levels=lv).fit(feat(nat_tr_flat, nat_tr_maps))
                  for name, (lv, feat) in svm_kinds.items()}

    def codes(name: str, flat: torch.Tensor, maps: torch.Tensor) -> np.ndarray:
        return quantizers[name].transform(svm_kinds[name][1](flat, maps))

    # Fit detectors per training setting and score every test set.
    scores: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DETECTORS}
    fitted_params: dict[str, dict[str, Any]] = {d: {} for d in DETECTORS}
    usable = [s for s in settings if len(adv_flat[s.key, "train"]) >= 10 and len(adv_flat[s.key, "test"]) >= 5]
    skipped = [s.key for s in settings if s not in usable]
    for s in progress(usable, desc="detectors"):
        n_adv = len(adv_flat[s.key, "train"])
        for det_name, (lv, _) in svm_kinds.items():
            X = np.concatenate([codes(det_name, nat_tr_flat, nat_tr_maps),
                                codes(det_name, adv_flat[s.key, "train"], adv_maps[s.key, "train"])])
            y = np.r_[np.zeros(len(nat_tr_flat), dtype=int), np.ones(n_adv, dtype=int)]
            det = CodeSVMDetector(levels=lv, random_state=cfg.seed).fit(X, y)
            fitted_params[det_name][s.key] = {"gamma": det.gamma_, "sigma": det.sigma_, "C": det.C_,
                                              "support_vectors": int(len(det.support_vectors_)),
                                              "code_units": int(X.shape[1])}
            scores[det_name][s.key] = _score_all(
                lambda fm, name=det_name, det=det: det.decision_function(codes(name, *fm)),
                (nat_te_flat, nat_te_maps), None if miss_te_flat is None else (miss_te_flat, miss_te_maps),
                {k: (adv_flat[k], adv_maps[k]) for k in adv_flat},
                {k: (all_te_flat[k], all_te_maps[k]) for k in all_te_flat}, settings)
        met = MetzenDetector(model, layer=cfg.layer, epochs=cfg.metzen_epochs, seed=cfg.seed)
        met.fit_activations(nat_tr_maps, adv_maps[s.key, "train"])
        fitted_params["metzen"][s.key] = {"epochs": cfg.metzen_epochs}
        scores["metzen"][s.key] = _score_all(met.decision_function_from_activations, nat_te_maps, miss_te_maps,
                                             adv_maps, all_te_maps, settings)

    # Confidence baseline: threshold at 5 % FPR on natural training logits.
    conf = ConfidenceDetector(target_fpr=0.05).fit(logits_tr[ok_tr].numpy())
    conf_scores = {"natural": conf.decision_function(logits_te[ok_te].numpy()), "adversarial": {}}
    for s in settings:
        o = outcomes[s.key]["test"]
        _, lg = predict(model, o.adversarial[o.success]) if o.success.any() else (None, torch.zeros(0, logits_te.shape[1]))
        conf_scores["adversarial"][s.key] = conf.decision_function(lg.numpy()) if len(lg) else np.zeros(0)

    results = _summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean)
    results["skipped_train_settings"] = skipped
    results["provenance"] = {k: v for k, v in provenance.items() if not k.endswith("indices")}
    results["model"] = model_source
    results["seconds"] = round(time.time() - t_start, 1)
    from .report import write_experiment_report

    write_experiment_report(out, cfg, results, settings, usable, scores, conf_scores, provenance)
    log.info("report written to %s in %.0f s", out / "report.md", results["seconds"])
    return results


def _score_all(score_fn, nat_te, miss_te, adv_by_key, all_by_key, settings) -> dict[str, Any]:
    """Scores of one fitted detector on the natural, misclassified-clean and every adversarial test set.

    A set is whatever ``score_fn`` takes: a tensor, or a tuple of tensors with one row per image.
    """
    def n(v) -> int:
        return 0 if v is None else len(v[0]) if isinstance(v, tuple) else len(v)

    return {
        "natural": np.asarray(score_fn(nat_te), dtype=float),
        "misclassified_clean": np.asarray(score_fn(miss_te), dtype=float) if n(miss_te) else np.zeros(0),
        "adversarial": {t.key: np.asarray(score_fn(adv_by_key[t.key, "test"]), dtype=float) if n(adv_by_key[t.key, "test"])
                        else np.zeros(0) for t in settings},
        "all_attempts": {t.key: np.asarray(score_fn(all_by_key[t.key]), dtype=float) for t in settings},
    }


def _summarise(cfg, settings, usable, outcomes, scores, conf, conf_scores, fitted_params, clean) -> dict[str, Any]:
    from ..cross_attack import cross_attack_matrix
    from ..metrics import detection_metrics, safetynet_rates
    from ..evaluation.report import config_record

    attacks = []
    for s in settings:
        te, tr = outcomes[s.key]["test"], outcomes[s.key]["train"]
        ok = te.success
        attacks.append({
            "key": s.key, "label": s.label, "family": s.family, "eps": s.eps, "params": dict(s.params), "top_k": s.top_k,
            "success_rate_test": float(ok.float().mean()), "success_rate_train": float(tr.success.float().mean()),
            "adversarial_test": int(ok.sum()), "adversarial_train": int(tr.success.sum()),
            "median_l2": float(te.l2[ok].median()) if ok.any() else math.nan,
            "median_linf": float(te.linf[ok].median()) if ok.any() else math.nan,
            "seconds": round(te.seconds + tr.seconds, 1),
        })
    keys = [s.key for s in usable]
    detectors: dict[str, Any] = {}
    for d in DETECTORS:
        same = []
        for s in usable:
            sc = scores[d][s.key]
            dm = detection_metrics(sc["natural"], sc["adversarial"][s.key], threshold=0.0)
            # every attempt on a natural test image; the attack's success (re-checked) means a wrong label
            o = outcomes[s.key]["test"]
            rates = safetynet_rates(o.y.numpy(), o.pred.numpy(), sc["all_attempts"][s.key] > 0.0)
            same.append({"attack": s.key, "label": s.label, "auc": dm.auc, "accuracy": dm.accuracy,
                         "balanced_accuracy": dm.balanced_accuracy, "tpr": dm.tpr, "fpr": dm.fpr,
                         "tpr_at_1fpr": dm.tpr_at_1fpr, "tpr_at_5fpr": dm.tpr_at_5fpr,
                         "adversary_success": float(outcomes[s.key]["test"].success.float().mean()),
                         **rates, **fitted_params[d].get(s.key, {})})
        matrix = cross_attack_matrix({s.key: {t.key: (scores[d][s.key]["natural"], scores[d][s.key]["adversarial"][t.key])
                                              for t in usable} for s in usable}) if usable else None
        cross = {"train": keys, "test": keys, **({m: matrix[m].tolist() for m in ("auc", "balanced_accuracy", "tpr_at_5fpr")}
                                                 if matrix is not None else {})}
        nat = scores[d][usable[0].key]["natural"] if usable else np.zeros(0)
        miss = {s.key: float((scores[d][s.key]["misclassified_clean"] > 0).mean())
                if len(scores[d][s.key]["misclassified_clean"]) else math.nan for s in usable}
        detectors[d] = {"title": DETECTOR_TITLES[d], "same_attack": same, "cross_attack": cross,
                        "natural_false_rejection": {s.key: float((scores[d][s.key]["natural"] > 0).mean()) for s in usable},
                        "misclassified_clean_rejected": miss, "natural_test_examples": int(len(nat))}
    conf_rows = []
    for s in settings:
        adv = conf_scores["adversarial"][s.key]
        if len(adv) >= 1:
            dm = detection_metrics(conf_scores["natural"], adv, threshold=float(conf.threshold_))
            conf_rows.append({"attack": s.key, "label": s.label, "auc": dm.auc, "tpr": dm.tpr, "fpr": dm.fpr,
                              "tpr_at_5fpr": dm.tpr_at_5fpr, "balanced_accuracy": dm.balanced_accuracy})
    return {"config": config_record(cfg), "clean": clean, "attacks": attacks, "detectors": detectors,
            "confidence_baseline": {"threshold": float(conf.threshold_), "rows": conf_rows}}
