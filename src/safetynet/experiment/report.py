"""Figures, ``report.md`` and ``results.json`` for :func:`safetynet.experiment.run_experiment`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cross_attack import CrossAttackMatrix
from ..evaluation.plots import plot_cross_attack_heatmap, plot_roc_curves, plot_success_vs_accuracy
from ..metrics import RATE_LABELS
from ..evaluation.report import MarkdownReport, environment_info, reproduce_paragraph, write_results_json
from .config import DETECTOR_TITLES, DETECTORS

PCT = "{:.1%}"


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def write_experiment_report(out: Path, cfg, results: dict[str, Any], settings: Sequence, usable: Sequence,
                            scores: dict, conf_scores: dict, provenance: dict) -> None:

    fig_dir = out / "figures"
    labels = {s.key: s.label for s in settings}
    panel_f_train = _panel_train_attack(settings, cfg)  # ImageNet runs: the training attack of Figure 2F
    figures: dict[str, Path] = {}
    if usable:
        points = []
        for d in DETECTORS:
            for row in results["detectors"][d]["same_attack"]:
                points.append({"detector": DETECTOR_TITLES[d], "attack": row["label"],
                               "adversary_success": row["adversary_success"], "detector_accuracy": row["balanced_accuracy"]})
        figures["fig2"] = plot_success_vs_accuracy(points, fig_dir / "success_vs_accuracy.png",
                                                   title="Same-attack detection (Figure 2B layout)")
        if any("success_rate_test_top5" in a for a in results["attacks"]):
            figures.update(_imagenet_panels(results, labels, panel_f_train, fig_dir))
        for d in ("svm-binary", "svm-pooled", "metzen"):
            curves = {labels[s.key]: (scores[d][s.key]["natural"], scores[d][s.key]["adversarial"][s.key]) for s in usable}
            figures[f"roc-{d}"] = plot_roc_curves(curves, fig_dir / f"roc_{d}.png", title=f"ROC: {DETECTOR_TITLES[d]}")
        for d in DETECTORS:
            cr = results["detectors"][d]["cross_attack"]
            m = CrossAttackMatrix(tuple(labels[k] for k in cr["train"]), tuple(labels[k] for k in cr["test"]),
                                  {"auc": np.asarray(cr["auc"])})
            figures[f"cross-{d}"] = plot_cross_attack_heatmap(m, fig_dir / f"cross_attack_auc_{d}.png", metric="auc",
                                                              title=f"Cross-attack AUC: {DETECTOR_TITLES[d]}")

    rep = MarkdownReport(out / "report.md", title="SafetyNet: detecting type-I adversarial examples")
    c = results["clean"]
    rep.paragraph(
        f"Data: **{provenance['dataset']}**; detectors are trained on images from the {provenance['train_from']} "
        f"({c['train_images']} images) and tested on the {provenance['test_from']} ({c['test_images']} images). "
        f"Classifier: `{results['model']}`, tapped layer `{cfg.layer}` "
        f"({'all units' if cfg.pool is None else f'average-pooled to {cfg.pool}x{cfg.pool}'}; the pooled detector "
        f"quantizes each channel average-pooled to {cfg.pooled}x{cfg.pooled}, our addition to the paper). "
        f"Clean accuracy: {_pct(c['train_accuracy'])} (train part), {_pct(c['test_accuracy'])} (test part). "
        f"Run time {results['seconds']:.0f} s, seed {cfg.seed}.")
    pv, ex = results["provenance"], results["execution"]
    rep.paragraph(
        f"Natural training images: {pv['natural_fit']} train the detectors (with their adversarials), "
        f"{pv['natural_calibration']} are held out to calibrate thresholds; natural test images: {pv['natural_test']} "
        f"(+ {pv['misclassified_test']} misclassified clean). Units of {ex['chunk_size']} images ran on "
        f"{ex['executor']} ({ex['units_computed']} computed, {ex['units_cached']} read from the cache), device {ex['device']}.")
    rep.paragraph(
        "*Natural* examples are clean images the classifier labels correctly; clean images it gets wrong are "
        "left out of detector training and of the detection metrics (their rejection rate is reported below). "
        "*Adversarial* examples are the successful attempts of an attack on natural images (success re-checked "
        "on the clipped images). Detection accuracy is balanced accuracy (mean of TPR and TNR) at the detector's "
        "own threshold (SVM decision value 0; subnetwork logit 0) in the first tables, and at a threshold calibrated "
        "on held-out natural images in the next section. TPR at 1 %/5 % FPR is read off the test ROC.")

    rep.heading("Attacks")
    rep.table([{"attack": a["label"], "success (test)": a["success_rate_test"], "success (train)": a["success_rate_train"],
                "adversarial test examples": a["adversarial_test"], "median L2": a["median_l2"],
                "median L∞ (×255)": a["median_linf"] * 255 if a["median_linf"] == a["median_linf"] else None,
                "compute s": a["seconds"]} for a in results["attacks"]],
              formats={"success (test)": PCT, "success (train)": PCT, "median L2": "{:.3f}", "median L∞ (×255)": "{:.2f}",
                       "compute s": "{:.0f}"})
    rep.paragraph("*compute s*: the attack's compute time, summed over its units (each on one worker), whatever "
                  "the number of workers; the run's wall time is above.")
    if any("success_rate_test_top5" in a for a in results["attacks"]):
        rep.paragraph("ImageNet scoring: *top-1* success = the adversarial label differs from the true label; "
                      "*top-5* success = it also lies outside the clean image's top 5 (the paper's Figure 2 D/E). "
                      "The detectors below train and test on each setting's own success (top-5 for DeepFool-top-5, "
                      "top-1 otherwise).")
        rep.table([{"attack": a["label"], "success top-1 (test)": a["success_rate_test_top1"],
                    "success top-5 (test)": a["success_rate_test_top5"], "median L2 (top-5 successes)": a["median_l2_top5"]}
                   for a in results["attacks"]],
                  formats={"success top-1 (test)": PCT, "success top-5 (test)": PCT, "median L2 (top-5 successes)": "{:.3f}"})
    if results["skipped_train_settings"]:
        rep.paragraph(f"Too few successful adversarials to train or test a detector for: {results['skipped_train_settings']}.")

    rep.heading("Same-attack detection (trained and tested on the same attack)")
    for d in DETECTORS:
        rows = results["detectors"][d]["same_attack"]
        if not rows:
            continue
        rep.heading(DETECTOR_TITLES[d], level=3)
        rep.table([{"attack": r["label"], "AUC": r["auc"], "detection acc.": r["balanced_accuracy"], "TPR": r["tpr"],
                    "FPR": r["fpr"], "TPR@1%FPR": r["tpr_at_1fpr"], "TPR@5%FPR": r["tpr_at_5fpr"],
                    "adversary success": r["adversary_success"], RATE_LABELS["misclassified_accepted"]: r["misclassified_accepted"],
                    RATE_LABELS["correct_rejected"]: r["correct_rejected"]} for r in rows],
                  formats={k: PCT for k in ("detection acc.", "TPR", "FPR", "TPR@1%FPR", "TPR@5%FPR", "adversary success",
                                            RATE_LABELS["misclassified_accepted"], RATE_LABELS["correct_rejected"])})
    fpr_pct = f"{100 * cfg.fpr:g} %"
    rep.heading(f"At the calibrated operating point ({fpr_pct} FPR on held-out natural images)")
    rep.paragraph(
        f"Each detector's threshold is set so that {fpr_pct} of the calibration images are rejected: natural "
        f"training images ({results['provenance']['natural_calibration']}) held out from detector training "
        "(Tramèr et al. 2020; Bryniarski et al. 2022 fix the threshold this way). The FPR column is measured on the "
        "natural *test* images, so it shows how well the calibration carries over.")
    for d in DETECTORS:
        rows = results["detectors"][d]["same_attack"]
        if not rows:
            continue
        rep.heading(DETECTOR_TITLES[d], level=3)
        rep.table([{"attack": r["label"], "threshold": r["calibrated"]["threshold"],
                    "detection acc.": r["calibrated"]["balanced_accuracy"], "TPR": r["calibrated"]["tpr"],
                    "FPR": r["calibrated"]["fpr"], RATE_LABELS["misclassified_accepted"]: r["calibrated"]["misclassified_accepted"],
                    RATE_LABELS["correct_rejected"]: r["calibrated"]["correct_rejected"]} for r in rows],
                  formats={"threshold": "{:.4g}", **{k: PCT for k in ("detection acc.", "TPR", "FPR",
                                                                       RATE_LABELS["misclassified_accepted"],
                                                                       RATE_LABELS["correct_rejected"])}})

    rep.paragraph(
        "*W→A* (wrong and accepted; `misclassified_accepted` in results.json, the same rate as in the robustness "
        "report) is the paper's F→T for a multi-class classifier: the share of all attack attempts whose result is "
        "misclassified (top-1) **and** passes the detector; *T→T rej* (`correct_rejected`): the attempt left the label "
        "right but the detector rejects it. Both from `safetynet.metrics.safetynet_rates`.")
    if "fig2" in figures:
        rep.image(figures["fig2"], "adversary success vs detection accuracy")
        rep.image(figures["roc-svm-binary"], "ROC SafetyNet binary")
        rep.image(figures["roc-svm-pooled"], "ROC SafetyNet quaternary pooled")
        rep.image(figures["roc-metzen"], "ROC Metzen subnetwork")

    if "fig2d" in figures:
        rep.heading("Figure 2 D-F layout (ImageNet)")
        rep.paragraph(
            "The paper's ImageNet panels: **D** same-attack detection against the adversary's top-5 success, **E** the "
            f"same detectors against top-1 success, **F** the detector trained on {labels[panel_f_train]} "
            "(the paper's L∞ attack) tested on every attack, against top-5 success. Detector accuracy is "
            "balanced accuracy at the detector's own threshold, as in the paper. The pooled detector is left out: on a "
            "layer that is already one value per channel it is the quaternary detector.")
        for key, alt in (("fig2d", "Figure 2D: same attack, top-5"), ("fig2e", "Figure 2E: same attack, top-1"),
                         ("fig2f", "Figure 2F: trained on L-inf, top-5")):
            rep.image(figures[key], alt)

    rep.heading("Cross-attack generalisation (rows: trained on; columns: tested on)")
    for d in DETECTORS:
        cr = results["detectors"][d]["cross_attack"]
        if not cr["train"]:
            continue
        rep.heading(f"{DETECTOR_TITLES[d]}: AUC / TPR at 5 % FPR", level=3)
        rows = []
        for i, tr in enumerate(cr["train"]):
            row = {"trained on": labels[tr]}
            for j, te in enumerate(cr["test"]):
                row[labels[te]] = f"{cr['auc'][i][j]:.3f} / {_pct(cr['tpr_at_5fpr'][i][j])}"
            rows.append(row)
        rep.table(rows)
        rep.image(figures[f"cross-{d}"], f"cross-attack AUC {d}")
    gen = _generalisation_summary(results)
    if gen:
        rep.paragraph("Mean off-diagonal AUC (generalisation to attacks not seen in training): " +
                      ", ".join(f"{DETECTOR_TITLES[d]} {v:.3f}" for d, v in gen.items()) + ".")
        results["mean_cross_attack_auc"] = gen

    rep.heading("Natural examples and misclassified clean images")
    rep.paragraph(f"Per training attack, at the SVM's zero / at the calibrated threshold ({fpr_pct} FPR).")
    det = results["detectors"]

    def both(d: str, name: str) -> str:
        return ", ".join(f"{labels[k]}: {_pct(v)} / {_pct(det[d][name + '_calibrated'][k])}"
                         for k, v in det[d][name].items())

    rep.table([{"detector": DETECTOR_TITLES[d], "natural test images falsely rejected": both(d, "natural_false_rejection"),
                "misclassified clean images rejected": both(d, "misclassified_clean_rejected")}
               for d in DETECTORS if det[d]["same_attack"]])

    curve = [r for r in results.get("size_curve", []) if r["available"]]
    if results.get("size_curve"):
        rep.heading("Detection vs training-set size (binary codes)")
        rep.paragraph("The binary-code SVM trained on the first n natural and n adversarial training examples "
                      "(class-balanced prefixes), tested on the same test set; TPR at the threshold calibrated "
                      f"at {fpr_pct} FPR on the held-out natural images.")
        rep.table([{"attack": r["label"], "n per class": r["n_per_class"], "AUC": r["auc"], "TPR@5%FPR": r["tpr_at_5fpr"],
                    "TPR (calibrated)": r["calibrated_tpr"], "FPR (calibrated, test)": r["calibrated_fpr"],
                    "solver": r["solver"], "fit s": r["fit_seconds"]} for r in curve],
                  formats={"TPR@5%FPR": PCT, "TPR (calibrated)": PCT, "FPR (calibrated, test)": PCT, "fit s": "{:.1f}"})
        missing = [r for r in results["size_curve"] if not r["available"]]
        if missing:
            rep.paragraph("Not enough examples for: " + ", ".join(
                f"{r['label']} n={r['n_per_class']} ({r['natural_available']} natural / "
                f"{r['adversarial_available']} adversarial available)" for r in missing) + ".")
        if curve:
            from ..evaluation.plots import plot_size_curve

            fig = plot_size_curve(curve, fig_dir / "size_curve.png")
            rep.image(fig, "AUC vs training-set size")

    rep.heading("Baseline: rejection by classification confidence")
    cb = results["confidence_baseline"]
    rep.paragraph(f"Reject when the max softmax probability is below {1 - cb['threshold']:.4f} "
                  f"(threshold set for {fpr_pct} false rejections on the held-out natural training images).")
    if cb["rows"]:
        rep.table([{"attack": r["label"], "AUC": r["auc"], "TPR": r["tpr"], "FPR": r["fpr"], "TPR@5%FPR": r["tpr_at_5fpr"]}
                   for r in cb["rows"]], formats={"TPR": PCT, "FPR": PCT, "TPR@5%FPR": PCT})

    env = environment_info()
    rep.heading("Reproduce")
    rep.paragraph(reproduce_paragraph(env))
    rep.write()
    write_results_json(out / "results.json", results, config=results["config"], environment=env)


#: The paper's Figure 2 D-F series (binary and quaternary codes; the Metzen subnetwork beside them).
_PANEL_DETECTORS = ("svm-binary", "svm-quaternary", "metzen")


def _panel_train_attack(settings: Sequence, cfg) -> str | None:
    """Key of the attack panel F trains on: ``cfg.train_attack`` (key, label or family), else the first BIM-L∞."""
    wanted = getattr(cfg, "train_attack", None)
    for s in settings:
        if wanted is None and s.family == "BIM-Linf" or wanted is not None and wanted in (s.key, s.label, s.family):
            return s.key
    return settings[0].key if settings else None


def _imagenet_panels(results: dict[str, Any], labels: dict[str, str], train: str, fig_dir: Path) -> dict[str, Path]:
    """Figure 2 D (same attack, top-5 success), E (same attack, top-1) and F (trained on ``train``, top-5)."""
    top = {a["key"]: (a["success_rate_test_top1"], a["success_rate_test_top5"]) for a in results["attacks"]}
    panels: dict[str, list[dict[str, Any]]] = {"fig2d": [], "fig2e": [], "fig2f": []}
    for d in _PANEL_DETECTORS:
        det = results["detectors"][d]
        for row in det["same_attack"]:
            t1, t5 = top[row["attack"]]
            for key, x in (("fig2d", t5), ("fig2e", t1)):
                panels[key].append({"detector": DETECTOR_TITLES[d], "attack": row["label"], "adversary_success": x,
                                    "detector_accuracy": row["balanced_accuracy"]})
        cr = det["cross_attack"]
        if train in cr["train"]:
            i = cr["train"].index(train)
            for j, te in enumerate(cr["test"]):
                panels["fig2f"].append({"detector": DETECTOR_TITLES[d], "attack": labels[te],
                                        "adversary_success": top[te][1], "detector_accuracy": cr["balanced_accuracy"][i][j]})
    titles = {"fig2d": "Figure 2D layout: same attack, top-5 success", "fig2e": "Figure 2E layout: same attack, top-1 success",
              "fig2f": f"Figure 2F layout: trained on {labels[train]}, top-5 success"}
    return {k: plot_success_vs_accuracy(v, fig_dir / f"{k}.png", title=titles[k]) for k, v in panels.items() if v}


def _generalisation_summary(results: dict[str, Any]) -> dict[str, float]:
    out = {}
    for d, det in results["detectors"].items():
        auc = np.asarray(det["cross_attack"].get("auc", []), dtype=float)
        if auc.ndim == 2 and auc.shape[0] > 1:
            off = auc[~np.eye(len(auc), dtype=bool)]
            out[d] = float(np.nanmean(off))
    return out
