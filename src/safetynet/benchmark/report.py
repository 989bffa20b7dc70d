"""The benchmark's outputs: ``results.json`` (with provenance), ``report.md`` and ``figures/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.report import MarkdownReport, config_record, environment_info, reproduce_paragraph, write_results_json
from .config import BenchmarkConfig

__all__ = ["write_benchmark_report"]


def _eps_label(norm: str, eps: float) -> str:
    return f"{eps * 255:g}/255" if norm == "linf" else f"{eps:g}"


def write_benchmark_report(out: Path, cfg: BenchmarkConfig, results: dict[str, Any],
                           roc: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    """Write ``results.json``, the figures and ``report.md`` into ``out``."""
    from ..evaluation.plots import plot_roc_curves, plot_success_vs_eps

    env = environment_info()
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    for attack, curves in roc.items():
        paths[f"roc:{attack}"] = plot_roc_curves(curves, figures / f"roc_{attack}.png",
                                                 title=f"{attack} (detectors trained on {cfg.adaptive_train_attack})")
    records = [r for r in results["adaptive_records"] if r["attack"] != "none" and r["success"] is not None]
    for dkey in sorted({r["defence"] for r in records}):
        for norm in cfg.norms:
            series: dict[str, tuple[list[float], list[float]]] = {}
            for r in records:
                if r["defence"] == dkey and r["norm"] == norm:
                    e, s = series.setdefault(r["attack"], ([], []))
                    e.append(r["eps"] * (255 if norm == "linf" else 1))
                    s.append(r["success"])
            strongest = [c for c in results["strongest"] if c["defence"] == dkey and c["norm"] == norm]
            if strongest:
                series["strongest"] = ([c["eps"] * (255 if norm == "linf" else 1) for c in strongest],
                                       [c["success"] for c in strongest])
                paths[f"success:{dkey}:{norm}"] = plot_success_vs_eps(
                    series, figures / f"success_{dkey}_{norm}.png", title=f"{dkey}: adaptive success ({norm})",
                    xlabel="ε (/255)" if norm == "linf" else "ε (L2)")
    results["figures"] = {k: str(v.relative_to(out)) for k, v in paths.items()}
    write_results_json(out / "results.json", results, config=config_record(cfg), environment=env)

    rep = MarkdownReport(out / "report.md", title="Detector benchmark: SafetyNet and the published baselines")
    clean = results["clean"]
    rep.paragraph(f"Classifier `{results['model']}` on `{results['dataset']}`: {clean['n']} test images attacked "
                  f"(clean accuracy {clean['accuracy']:.1%}), the first {clean['n_adaptive']} of them also by the "
                  f"adaptive attacks (clean accuracy {clean['accuracy_adaptive']:.1%}). Detectors fitted on {results['split']['natural_fit']} "
                  f"natural fit images and their adversarials; every threshold set on "
                  f"{results['split']['calibration']} held-out clean images at {cfg.target_fpr:.0%} FPR. "
                  f"Run time {results['seconds']:.0f} s." + (" **Quick setting** (small n, few steps): a smoke "
                                                              "test of the protocol, not a leaderboard." if cfg.quick else ""))
    rep.heading("(a) Type-I detection")
    rep.paragraph(f"Detectors trained on **{cfg.adaptive_train_attack}**: ROC AUC and TPR at the calibrated threshold "
                  "(FPR on the clean test images in brackets); each attack run once on the bare classifier, "
                  "only its successful adversarials of correctly classified images count. CW-L2 and Square were never "
                  "trained on.")
    det = results["detection"]
    main = [r for r in det if r["trained_on"] in (cfg.adaptive_train_attack, "given")]
    detectors = list(dict.fromkeys(r["detector"] for r in main))
    attacks = list(dict.fromkeys(r["tested_on"] for r in det))
    if main:
        rows = []
        for d in detectors:
            row: dict[str, Any] = {"detector": d}
            for a in attacks:
                m = next((r for r in main if r["detector"] == d and r["tested_on"] == a), None)
                row[a] = None if m is None else f"{m['auc']:.3f} / {m['tpr']:.0%} ({m['fpr']:.0%})"
            rows.append(row)
        rep.table(rows, columns=["detector", *attacks])
        for a in attacks:
            if f"roc:{a}" in paths:
                rep.image(paths[f"roc:{a}"], f"ROC {a}")
    rep.heading("Trained on one, tested on others (ROC AUC)", 3)
    if det:
        rows = []
        for d in list(dict.fromkeys(r["detector"] for r in det)):
            for train in list(dict.fromkeys(r["trained_on"] for r in det if r["detector"] == d)):
                row = {"detector": d, "trained on": train}
                for r in det:
                    if r["detector"] == d and r["trained_on"] == train:
                        row[r["tested_on"]] = r["auc"]
                rows.append(row)
        rep.table(rows, columns=["detector", "trained on", *attacks])
    tested = results["test_adversarials"]
    rep.table([{"attack": a, "eps": v["eps"], "success": v["success"], "median L2": v.get("median_l2"),
                "median L-inf": v.get("median_linf"), "median queries": v.get("median_queries")} for a, v in tested.items()],
              formats={"success": "{:.1%}"})

    rep.heading("(b) Adaptive white-box attacks")
    rep.paragraph("Success = misclassified **and** accepted at the calibrated threshold, over the test images the "
                  "classifier gets right; per detector the strongest of the rows " + ", ".join(cfg.adaptive) +
                  " (smoothed/joint PGD, BPDA, orthogonal PGD) at each budget.")
    strongest = results["strongest"]
    for norm in cfg.norms:
        eps_list = sorted({c["eps"] for c in strongest if c["norm"] == norm})
        rows = []
        for dkey in dict.fromkeys(c["defence"] for c in strongest):
            row = {"defence": dkey}
            for c in strongest:
                if c["defence"] == dkey and c["norm"] == norm:
                    row[_eps_label(norm, c["eps"])] = f"{c['success']:.0%} ({c['attack']})"
            rows.append(row)
        if rows and eps_list:
            rep.heading(f"{norm}", 3)
            rep.table(rows, columns=["defence", *[_eps_label(norm, e) for e in eps_list]])
            for dkey in dict.fromkeys(c["defence"] for c in strongest):
                if f"success:{dkey}:{norm}" in paths:
                    rep.image(paths[f"success:{dkey}:{norm}"], f"{dkey} {norm}")

    rep.heading("(c) Reliability flags")
    trig = [f for f in results["flags"] if f["triggered"]]
    if trig:
        rep.table([{"flag": f["name"], "context": ", ".join(f"{k}={v}" for k, v in f["context"].items()),
                    "detail": f["detail"]} for f in trig])
    else:
        rep.paragraph("No flag triggered.")
    rep.heading("(d) Consistency with robust classification (Tramèr 2022)")
    cons = results["consistency"]
    if cons:
        rep.table([{"defence": c["defence"], "norm": c["norm"], "detection eps": _eps_label(c["norm"], c["detection_eps"]),
                    "implied robust acc. at eps/2": c["implied_robust_accuracy"],
                    "published": c["published_robust_accuracy"], "exact": c["exact"], "flag": c["triggered"]}
                   for c in cons], formats={"implied robust acc. at eps/2": "{:.1%}", "published": "{:.1%}"})
        rep.paragraph("Sources: " + "; ".join(sorted({c["source"] for c in cons})) + ". `exact` = False: the published "
                      "number is at eps, not eps/2 (indicative only).")
    else:
        rep.paragraph("No budget with a published comparison (L2 1.0 or L-inf 16/255) was run.")
    rep.heading("Reproduce")
    rep.paragraph(reproduce_paragraph(env))
    rep.write()
