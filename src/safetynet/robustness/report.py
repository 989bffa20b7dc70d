"""``report.md`` (the paper's Table 4 layout), ``results.json`` and figures for :func:`run_robustness`.

Rates, per defence column (Ori / Subnet Det / Det A / Det ensemble), over the ``n`` attacked
test images (every image is attacked, including those the classifier already gets wrong, as in
the paper's table, whose non-attack row shows the classifier's unforced errors):

* **W→A** (wrong label accepted) = #(prediction != true label and not rejected) / n. In the
  paper's binary SceneProof task this is F→T + T→F weighted by class frequency; for a
  multi-class task there is one "wrong" event, so we report it as one number. Lower is better.
* **T→T rej** (right label rejected) = #(prediction == true label and rejected) / n: the cost
  of the detector (it only matters for non-attack data, as the paper notes).
* with ``positive_class`` (a binary task) also the paper's **F→T** and **T→F**, per ground truth
  (:func:`safetynet.metrics.safetynet_rates`).

The *success* of an attack (curves, flags) is W→A restricted to the images the classifier
labels correctly before the attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..evaluation.rows import DEFENCE_TITLES
from ..evaluation.report import MarkdownReport, config_record, environment_info, reproduce_paragraph, write_results_json

__all__ = ["table4_rows", "write_robustness_report"]



def _detectors(results: dict[str, Any]) -> list[str]:
    """Keys of the defences with a detector (every column but Ori), in Table-4 order."""
    return [k for k in _titles(results) if k != "ori"]


def _titles(results: dict[str, Any]) -> dict[str, str]:
    """Column titles of the defences that ran (SceneProof's ensemble is "Det ABC"), in Table-4 order."""
    if results.get("defences"):
        return {k: v["title"] for k, v in results["defences"].items()}
    return dict(DEFENCE_TITLES)  # results written before defences were recorded
NORM_TITLES = {"linf": "L∞", "l2": "L2"}


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _eps(v: float | None) -> str:
    if v is None:
        return "-"
    k = v * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 and v < 0.2 and v * 255 >= 1 else f"{v:g}"


# ------------------------------------------------------------------------------------ tables
def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The attack rows that were run, in order: ``{key: {label, kind, access, ...}}``."""
    if results.get("rows"):
        return results["rows"]
    from ..evaluation.rows import ATTACK_ROWS  # results written before per-surrogate rows existed

    return {k: {"label": r.label, "kind": r.kind, "access": r.access} for k, r in ATTACK_ROWS.items()}


def _find(records: Sequence[dict], attack: str, defence: str, norm: str | None, eps: float | None) -> dict | None:
    for r in records:
        if r["attack"] == attack and r["defence"] == defence and r["norm"] == norm and (
                eps is None or r["eps"] is None or math.isclose(r["eps"], eps)):
            return r
    return None


def table4_rows(results: dict[str, Any], norm: str, eps: float, positive_class: int | None = None) -> list[dict[str, Any]]:
    """Table-4 rows at one budget: the non-attack row, then one row per attack; cells are rates."""
    specs = _rows(results)
    recs = results["records"]
    rows = []
    keys = ["none"] + [a for a in specs if any(r["attack"] == a and r["norm"] == norm for r in recs)]
    for a in keys:
        label = "Non-attack data" if a == "none" else specs[a]["label"]
        row: dict[str, Any] = {"method": label, "access": "-" if a == "none" else specs[a]["access"]}
        for d, t in _titles(results).items():
            r = _find(recs, a, d, None if a == "none" else norm, None if a == "none" else eps)
            if positive_class is not None:
                row[f"{t} F→T"] = None if r is None else r.get("F->T")
                row[f"{t} T→F"] = None if r is None else r.get("T->F")
            else:
                row[f"{t} W→A"] = None if r is None else r["misclassified_accepted"]
            if d != "ori":
                row[f"{t} T→T rej"] = None if r is None else r["correct_rejected"]
        rows.append(row)
    return rows


def _headline(cfg: Any, results: dict[str, Any], norm: str) -> float:
    if cfg.headline and norm in cfg.headline:
        return float(cfg.headline[norm])
    eps = results["eps"][norm]
    return eps[len(eps) // 2]


def _curves(results: dict[str, Any], norm: str, defence: str) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in results["records"]:
        if r["attack"] == "none" or r["norm"] != norm or r["defence"] != defence or r["success"] is None:
            continue
        s = series.setdefault(r["label"], ([], []))
        s[0].append(r["eps"])
        s[1].append(r["success"])
    return series


# ------------------------------------------------------------------------------------ writing
def write_robustness_report(out: Path, cfg: Any, results: dict[str, Any]) -> Path:
    """Write ``results.json``, ``figures/success_<norm>_<defence>.png`` and ``report.md``; returns the report path."""

    from ..evaluation.plots import plot_success_vs_eps

    out = Path(out)
    env = environment_info()
    write_results_json(out / "results.json", results, config=config_record(cfg), environment=env)
    figures: dict[tuple[str, str], Path] = {}
    for norm in cfg.norms:
        for d, title in _titles(results).items():
            series = _curves(results, norm, d)
            if series:
                figures[norm, d] = plot_success_vs_eps(
                    series, out / "figures" / f"success_{norm}_{d}.png", xlabel=f"ε ({NORM_TITLES[norm]})",
                    title=f"{title}: success vs ε ({NORM_TITLES[norm]})")

    rep = MarkdownReport(out / "report.md", title="SafetyNet robustness: type-I, type-II, adaptive and black-box attacks")
    c, fit = results["clean"], results["fitted"]
    fitted_here = "given" not in fit
    rep.paragraph(
        f"Model `{results['model']}` on **{results['dataset']}**; {c['n']} attacked test images "
        f"({results['provenance']['test']}), clean accuracy {_pct(c['accuracy'])}. "
        + (f"Detectors fitted on {fit['natural_fit']} natural vs {fit['adversarial_fit']} BIM-L∞ "
           f"(ε={_eps(fit['fit_eps_linf'])}) adversarial images ({results['provenance']['fit']}). " if fitted_here else
           f"Defences: the task's own, not refitted ({results['provenance']['fit']}). ")
        + f"Run time {results['seconds']:.0f} s, seed {cfg.seed}, {env.get('torch_threads')} thread(s)."
        + (f" **Every attack changes only {results['perturbed'].split('(')[-1].rstrip(')')}** (the threat model); "
           "the rest of the input stays bit-identical, checked on every result." if results.get("perturbed") != "all pixels"
           else ""))
    rep.heading("Defences")
    if fitted_here:
        det_rows = []
        for d in [k for k in ("det_a", "det_a_narrow", "det_ens") if k in fit]:
            for layer, info in fit[d]["detectors"].items():
                det_rows.append({"defence": _titles(results)[d], "layer": layer, "units": info["units"], "gamma": info["gamma"],
                                 "sigma": info["sigma"], "C": info["C"], "support vectors": info["support_vectors"]})
        rep.paragraph(f"**Ori**: the bare classifier. **Subnet Det**: Metzen et al.'s subnetwork on `{fit['subnet']['layer']}`. "
                      f"**Det A**: SafetyNet ({cfg.levels}-level codes) on {', '.join(f'`{n}`' for n in fit['det_a']['layers'])}. "
                      f"**Det ensemble**: SafetyNet on {', '.join(f'`{n}`' for n in fit['det_ens']['layers'])}, rejecting "
                      "when any layer's RBF-SVM fires (the paper's Det ABC)."
                      + (f" **Det A (narrow σ)**: Det A with the paper's small σ, gamma fixed at "
                         f"{fit['det_a_narrow']['gamma_multiplier']:g} / median squared distance between training codes "
                         "(cross-validation picks the widest kernel of its grid; the paper's robustness argument needs a "
                         "narrow one), exact solver." if "det_a_narrow" in fit else ""))
        rep.table(det_rows, formats={"gamma": "{:.4g}", "sigma": "{:.3g}", "C": "{:g}"})
        cal = fit.get("calibration")
        if cal:
            rep.paragraph(
                f"**Operating point**: every detector's threshold is calibrated to reject {cal['fpr']:.0%} of "
                f"{cal['natural']} natural fit images held out from detector training (Tramèr et al. 2020; "
                "Bryniarski et al. 2022); attacks aim at, and are judged by, the calibrated decision. Thresholds: "
                + ", ".join(f"{_titles(results)[k]} {t:.4g}" for k, t in cal["thresholds"].items()) + ".")
        else:
            rep.paragraph("**Operating point**: the detectors' own thresholds (SVM decision value 0, subnetwork logit 0); "
                          "not calibrated (`--no-calibrate`).")
    else:
        rep.table([{"column": d["title"], "detector": f"`{d['detector']}`", "threshold": d["threshold"]}
                   for d in results["defences"].values()])

    rep.heading("Definitions")
    rep.paragraph(
        "**W→A** (wrong label accepted): the fraction of the attacked images that end up with a wrong label "
        "*and* are not rejected -- the paper's F→T / T→F for a multi-class task, where \"false\" is any wrong class. "
        "**T→T rej**: still correctly classified but rejected. Lower W→A is better for the defence. Rates are over "
        "all attacked images; *success* (curves, flags) is W→A over the images the classifier got right before "
        "the attack. Type-I attacks (I) only try to fool the classifier; type-II attacks (II) must also evade "
        "the defence they are run against (each adaptive attack is crafted against that column's detector; "
        "against Ori they reduce to a plain CW-PGD). Success is always judged by the real defence: hard "
        "quantizer, exact RBF kernel, on the final clipped images.")

    for norm in cfg.norms:
        eps = _headline(cfg, results, norm)
        rep.heading(f"Table 4 layout, {NORM_TITLES[norm]}, ε = {_eps(eps)}")
        rows = table4_rows(results, norm, eps, results.get("positive_class"))
        cols = [k for k in rows[0] if k not in ("method", "access")]
        rep.table(rows, formats={k: _pct for k in cols})

    rep.heading("Success against ε (type II: misclassified and accepted, over clean-correct images)")
    rep.paragraph(f"Type-II budgets are doubled beyond the configured list (up to {cfg.extend_eps} times) until "
                  "every detector column reaches 100 % success; *italic* budgets are such extensions.")
    for norm in cfg.norms:
        eps_all = sorted({r["eps"] for r in results["records"] if r["norm"] == norm and r["eps"] is not None})
        extended = {r["eps"] for r in results["records"] if r["norm"] == norm and r.get("extended")}
        rows = []
        for a, spec in _rows(results).items():
            for d, title in _titles(results).items():
                pts = {r["eps"]: r["success"] for r in results["records"]
                       if r["attack"] == a and r["defence"] == d and r["norm"] == norm}
                if pts:
                    row = {"attack": spec["label"], "defence": title}
                    for e in eps_all:
                        key = f"*{_eps(e)}*" if e in extended else _eps(e)
                        row[key] = pts.get(e)
                    rows.append(row)
        if rows:
            rep.heading(NORM_TITLES[norm], level=3)
            rep.table(rows, formats={k: _pct for k in rows[0] if k not in ("attack", "defence")})
            for d, title in _titles(results).items():
                if (norm, d) in figures:
                    rep.image(figures[norm, d], f"{title} success vs eps ({norm})")

    if results["sweep"]:
        rep.heading("The paper's smoothing: λ (sigmoid sharpness) and σ (RBF width) sweep")
        rep.paragraph("Success (over all attacked images) against the *real* detector of each (λ, γ-scale) setting "
                      "alone (γ' = γ · scale, so σ' = σ / √scale); the type-II row above keeps, per image, any "
                      "setting's success.")
        for norm in cfg.norms:
            table: dict[tuple, dict[str, Any]] = {}
            for sw in (sw for sw in results["sweep"] if sw["norm"] == norm):
                key = (sw["defence"], sw["sharpness"], sw["gamma_scale"])
                row = table.setdefault(key, {"defence": _titles(results)[sw["defence"]], "λ": sw["sharpness"],
                                             "γ scale": sw["gamma_scale"]})
                row[f"ε={_eps(sw['eps'])}"] = sw["success_all"]
            rows = list(table.values())
            if not rows:
                continue
            eps_cols = list(dict.fromkeys(k for r in rows for k in r if k.startswith("ε=")))
            rep.heading(NORM_TITLES[norm], level=3)
            rep.table(rows, columns=["defence", "λ", "γ scale", *eps_cols],
                      formats={"λ": "{:g}", "γ scale": "{:g}", **{k: _pct for k in eps_cols}})

    tpr_rows = []
    for norm in cfg.norms:
        eps = _headline(cfg, results, norm)
        for a, spec in _rows(results).items():
            row: dict[str, Any] = {"attack": spec["label"], "norm": NORM_TITLES[norm], "ε": _eps(eps)}
            found = False
            for d in _detectors(results):
                r = _find(results["records"], a, d, norm, eps)
                row[_titles(results)[d]] = None if r is None else r.get("tpr_at_fpr")
                found |= r is not None
            if found:
                tpr_rows.append(row)
    if tpr_rows:
        rep.heading(f"Detection rate at {cfg.target_fpr:.0%} false positives")
        rep.paragraph("TPR among the misclassified attack outputs at the threshold that rejects "
                      f"{cfg.target_fpr:.0%} of the clean, correctly classified test images (the threshold is set on "
                      "the evaluated scores, so it is slightly optimistic).")
        rep.table(tpr_rows, formats={_titles(results)[d]: _pct for d in _detectors(results)})

    if results["queries"]:
        rep.heading("HopSkipJump queries per image")
        rep.table([{"defence": _titles(results)[q["defence"]], "norm": NORM_TITLES[q["norm"]], "budget": q["max_queries"],
                    "mean": q["mean"], "median": q["median"], "max": q["max"]} for q in results["queries"]],
                  formats={"mean": "{:.0f}", "median": "{:.0f}"})

    rep.heading("Reliability flags")
    flags = results["flags"]
    trig = [f for f in flags if f["triggered"]]
    rep.paragraph(f"{len(trig)} of {len(flags)} checks triggered (AutoAttack-style; see "
                  "`safetynet.evaluation.flags`). A triggered `zero_gradients_real_path` is expected for SafetyNet: its "
                  "quantizer has zero gradient almost everywhere, which is why the type-II rows use smoothing, "
                  "BPDA and black-box attacks. Triggered surrogate-gradient, black-box-beats-white-box, "
                  "monotonicity or no-full-success flags mean the corresponding numbers are lower bounds on what "
                  "an attacker achieves.")
    counts: dict[str, list[int]] = {}
    for f in flags:
        c = counts.setdefault(f["name"], [0, 0])
        c[0] += bool(f["triggered"])
        c[1] += 1
    rep.table([{"check": f"`{k}`", "triggered": v[0], "checked": v[1]} for k, v in counts.items()])
    if trig:
        rep.table([{"check": f["name"], "where": ", ".join(f"{k}={_eps(v) if k == 'eps' else v}" for k, v in f["context"].items()
                                                            if k in ("defence", "attack", "norm", "eps")),
                    "detail": f["detail"]} for f in trig])

    rep.heading("Summary")
    rep.paragraph(_summary(cfg, results))
    if results.get("surrogates"):
        rep.heading("Transfer surrogates", level=3)
        rep.paragraph("Black-box rows are crafted on these networks and replayed on the target; *accuracy* is each "
                      "surrogate's on the attacked test images (the target's: "
                      f"{_pct(results['clean']['accuracy'])}).")
        rep.table([{"surrogate": tag, "architecture": s.get("arch"), "seed": s.get("seed"), "epochs": s.get("epochs"),
                    "accuracy": s.get("attacked_images_accuracy"), "source": s.get("source")}
                   for tag, s in results["surrogates"].items()], formats={"accuracy": _pct})
    rep.heading("Timings (s)")
    rep.table([{"stage": k, "seconds": v} for k, v in results["timings"].items()], formats={"seconds": "{:.1f}"})
    rep.heading("Reproduce")
    rep.paragraph(reproduce_paragraph(env))
    return rep.write()


def _summary(cfg: Any, results: dict[str, Any]) -> str:
    """One sentence per detector and norm: best type-I vs best type-II success at the headline eps."""
    parts = []
    for norm in cfg.norms:
        eps = _headline(cfg, results, norm)
        for d in _detectors(results):
            recs = [r for r in results["records"] if r["defence"] == d and r["norm"] == norm and r["eps"] is not None
                    and math.isclose(r["eps"], eps) and r["success"] is not None]
            one = [r for r in recs if r["kind"] == "I"]
            two = [r for r in recs if r["kind"] == "II"]
            if not one or not two:
                continue
            b1 = max(one, key=lambda r: r["success"])
            b2 = max(two, key=lambda r: r["success"])
            verdict = ("type II beats type I" if b2["success"] > b1["success"]
                       else "type II does not beat type I here (see the flags: the attacks may be too weak)")
            parts.append(f"{_titles(results)[d]}, {NORM_TITLES[norm]} ε={_eps(eps)}: best type-I {b1['label']} "
                         f"{_pct(b1['success'])} vs best type-II {b2['label']} {_pct(b2['success'])}: {verdict}.")
    return " ".join(parts) if parts else "No detector column has both type-I and type-II results."
