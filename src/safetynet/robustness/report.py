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
  (:func:`safetynet.evaluation.metrics.safetynet_rates`).

The *success* of an attack (curves, flags) is W→A restricted to the images the classifier
labels correctly before the attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..evaluation.report import MarkdownReport, write_results_json
from .flags import (
    Flag,
    check_blackbox_beats_whitebox,
    check_monotone_in_eps,
    check_randomness,
    check_softmax_output,
    check_unbounded_success,
    check_zero_gradients,
    log_flags,
    safetynet_real_score,
)

__all__ = ["compute_flags", "table4_rows", "write_robustness_report"]

DEFENCE_TITLES = {"ori": "Ori", "subnet": "Subnet Det", "det_a": "Det A", "det_ens": "Det ensemble"}
NORM_TITLES = {"linf": "L∞", "l2": "L2"}


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _eps(v: float | None) -> str:
    if v is None:
        return "-"
    k = v * 255
    return f"{k:.0f}/255" if abs(k - round(k)) < 1e-6 and v < 0.2 and v * 255 >= 1 else f"{v:g}"


# ------------------------------------------------------------------------------------ flags
def compute_flags(cfg: Any, ctx: Any, records: Sequence[dict[str, Any]], x: torch.Tensor, y: torch.Tensor) -> list[Flag]:
    """Every reliability check of :mod:`safetynet.robustness.flags` on one robustness run."""
    from ..attacks.adaptive import BPDAScore, SmoothScore
    from ..attacks.type2 import classifier_loss

    flags: list[Flag] = []
    xs = x[: min(len(x), 64)]
    ys = y[: len(xs)]
    lam = cfg.sharpness[len(cfg.sharpness) // 2]
    gs = cfg.gamma_scale[-1]
    model = ctx.model

    def combined(score):
        def fn(xb):
            _, s = score(xb)
            return s.amax(1)
        return fn

    # kappa=inf: the raw CW margin, never clamped (a clamped margin is flat on images already misclassified)
    flags.append(check_zero_gradients(lambda xb: classifier_loss(model(xb), ys[: len(xb)], False, "cw", math.inf), xs,
                                      name="zero_gradients_classifier"))
    flags[-1].context["defence"] = "ori"
    for dkey in ("det_a", "det_ens"):
        net = ctx.defences[dkey].detector
        for name, fn in (("zero_gradients_real_path", safetynet_real_score(net)),
                         ("zero_gradients_smooth_surrogate", combined(SmoothScore(net, lam, gs))),
                         ("zero_gradients_bpda_surrogate", combined(BPDAScore(net, "identity")))):
            f = check_zero_gradients(fn, xs, name=name)
            f.context.update({"defence": dkey})
            if name == "zero_gradients_smooth_surrogate":
                f.context.update({"sharpness": lam, "gamma_scale": gs})
            flags.append(f)
    metzen = ctx.defences["subnet"].detector
    f = check_zero_gradients(metzen.score_torch, xs, name="zero_gradients_subnet")
    f.context["defence"] = "subnet"
    flags.append(f)
    for dkey, d in ctx.defences.items():
        flags.append(check_randomness(lambda xb, d=d: d.evaluate(xb, cfg.batch_size), xs, context={"defence": dkey}))
    flags.append(check_softmax_output(model, xs))

    attacked = [r for r in records if r["attack"] != "none" and r["success"] is not None]
    # Black box beating white box, per defence, norm and eps. Each row counts with its best success
    # at any budget up to eps (an adversarial found with a smaller budget is inside the larger ball),
    # so rows that stopped early (100 % before an extended eps) still take part.
    by_row: dict[tuple, list[tuple[float, float]]] = {}
    meta: dict[str, dict] = {}
    for r in attacked:
        by_row.setdefault((r["defence"], r["norm"], r["attack"]), []).append((r["eps"], r["success"]))
        meta[r["attack"]] = r
    grid: dict[tuple, set] = {}
    for (dkey, norm, _), pts in by_row.items():
        grid.setdefault((dkey, norm), set()).update(e for e, _ in pts)
    for (dkey, norm), eps_set in sorted(grid.items()):
        for eps in sorted(eps_set):
            succ, kinds = {}, {}
            for (d2, n2, attack), pts in by_row.items():
                if d2 != dkey or n2 != norm or not (meta[attack]["kind"] == "II" or dkey == "ori"):
                    continue  # type-I rows only try to fool the classifier, not this detector
                upto = [s_ for e, s_ in pts if e <= eps + 1e-12]
                if upto:
                    succ[attack], kinds[attack] = max(upto), meta[attack]["access"]
            if any(k == "white" for k in kinds.values()) and any(k == "black" for k in kinds.values()):
                flags.append(check_blackbox_beats_whitebox(succ, kinds, margin=0.02,
                                                           context={"defence": dkey, "norm": norm, "eps": eps}))
    # monotone in eps, and full success at the largest eps (type-II attacks on detectors)
    series: dict[tuple, list[tuple[float, float]]] = {}
    for r in attacked:
        series.setdefault((r["attack"], r["defence"], r["norm"], r["kind"], r["access"]), []).append((r["eps"], r["success"]))
    from .run import base_row

    for (attack, dkey, norm, kind, access), pts in sorted(series.items()):
        eps = [p[0] for p in pts]
        succ = [p[1] for p in pts]
        ctxd = {"attack": attack, "defence": dkey, "norm": norm}
        # Monotonicity is owed only where the attack pursues the very goal being scored: an adaptive
        # row against its own defence, or a white-box attack against the bare classifier. A type-I
        # or transfer attack is legitimately caught more often by a detector at larger budgets.
        if len(pts) > 1 and (base_row(attack).per_defence or (dkey == "ori" and access == "white")):
            flags.append(check_monotone_in_eps(eps, succ, tol=0.02, context=ctxd))
        if kind == "II" and dkey != "ori" and access == "white":
            flags.append(check_unbounded_success(eps, succ, context=ctxd))
    log_flags(flags)
    return flags


# ------------------------------------------------------------------------------------ tables
def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The attack rows that were run, in order: ``{key: {label, kind, access, ...}}``."""
    if results.get("rows"):
        return results["rows"]
    from .run import ATTACK_ROWS  # results written before per-surrogate rows existed

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
        for d, t in DEFENCE_TITLES.items():
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
    import dataclasses

    from ..evaluation.plots import plot_success_vs_eps

    out = Path(out)
    write_results_json(out / "results.json", results, config=dataclasses.asdict(cfg))
    figures: dict[tuple[str, str], Path] = {}
    for norm in cfg.norms:
        for d, title in DEFENCE_TITLES.items():
            series = _curves(results, norm, d)
            if series:
                figures[norm, d] = plot_success_vs_eps(
                    series, out / "figures" / f"success_{norm}_{d}.png", xlabel=f"ε ({NORM_TITLES[norm]})",
                    title=f"{title}: success vs ε ({NORM_TITLES[norm]})")

    rep = MarkdownReport(out / "report.md", title="SafetyNet robustness: type-I, type-II, adaptive and black-box attacks")
    c, fit = results["clean"], results["fitted"]
    rep.paragraph(
        f"Model `{results['model']}` on **{results['dataset']}**; {c['n']} attacked test images "
        f"({results['provenance']['test']}), clean accuracy {_pct(c['accuracy'])}. Detectors fitted on "
        f"{fit['natural_fit']} natural vs {fit['adversarial_fit']} BIM-L∞ (ε={_eps(fit['fit_eps_linf'])}) adversarial "
        f"images ({results['provenance']['fit']}). Run time {results['seconds']:.0f} s, seed {cfg.seed}, "
        f"{torch.get_num_threads()} thread(s)." + (" **Every attack changes only the depth channel** (the SceneProof threat "
                                       "model); RGB stays bit-identical." if results.get("perturbed") == "depth channel only"
                                       else ""))
    det_rows = []
    for d in ("det_a", "det_ens"):
        for layer, info in fit[d]["detectors"].items():
            det_rows.append({"defence": DEFENCE_TITLES[d], "layer": layer, "units": info["units"], "gamma": info["gamma"],
                             "sigma": info["sigma"], "C": info["C"], "support vectors": info["support_vectors"]})
    rep.heading("Defences")
    rep.paragraph(f"**Ori**: the bare classifier. **Subnet Det**: Metzen et al.'s subnetwork on `{fit['subnet']['layer']}`. "
                  f"**Det A**: SafetyNet ({cfg.levels}-level codes) on {', '.join(f'`{n}`' for n in fit['det_a']['layers'])}. "
                  f"**Det ensemble**: SafetyNet on {', '.join(f'`{n}`' for n in fit['det_ens']['layers'])}, rejecting "
                  "when any layer's RBF-SVM fires (the paper's Det ABC).")
    rep.table(det_rows, formats={"gamma": "{:.4g}", "sigma": "{:.3g}", "C": "{:g}"})

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
        rows = table4_rows(results, norm, eps, cfg.positive_class)
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
            for d, title in DEFENCE_TITLES.items():
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
            for d, title in DEFENCE_TITLES.items():
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
                row = table.setdefault(key, {"defence": DEFENCE_TITLES[sw["defence"]], "λ": sw["sharpness"],
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
            for d in ("subnet", "det_a", "det_ens"):
                r = _find(results["records"], a, d, norm, eps)
                row[DEFENCE_TITLES[d]] = None if r is None else r.get("tpr_at_fpr")
                found |= r is not None
            if found:
                tpr_rows.append(row)
    if tpr_rows:
        rep.heading(f"Detection rate at {cfg.target_fpr:.0%} false positives")
        rep.paragraph("TPR among the misclassified attack outputs at the threshold that rejects "
                      f"{cfg.target_fpr:.0%} of the clean, correctly classified test images (the threshold is set on "
                      "the evaluated scores, so it is slightly optimistic).")
        rep.table(tpr_rows, formats={DEFENCE_TITLES[d]: _pct for d in ("subnet", "det_a", "det_ens")})

    if results["queries"]:
        rep.heading("HopSkipJump queries per image")
        rep.table([{"defence": DEFENCE_TITLES[q["defence"]], "norm": NORM_TITLES[q["norm"]], "budget": q["max_queries"],
                    "mean": q["mean"], "median": q["median"], "max": q["max"]} for q in results["queries"]],
                  formats={"mean": "{:.0f}", "median": "{:.0f}"})

    rep.heading("Reliability flags")
    flags = results["flags"]
    trig = [f for f in flags if f["triggered"]]
    rep.paragraph(f"{len(trig)} of {len(flags)} checks triggered (AutoAttack-style; see "
                  "`safetynet.robustness.flags`). A triggered `zero_gradients_real_path` is expected for SafetyNet: its "
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
    return rep.write()


def _summary(cfg: Any, results: dict[str, Any]) -> str:
    """One sentence per detector and norm: best type-I vs best type-II success at the headline eps."""
    parts = []
    for norm in cfg.norms:
        eps = _headline(cfg, results, norm)
        for d in ("subnet", "det_a", "det_ens"):
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
            parts.append(f"{DEFENCE_TITLES[d]}, {NORM_TITLES[norm]} ε={_eps(eps)}: best type-I {b1['label']} "
                         f"{_pct(b1['success'])} vs best type-II {b2['label']} {_pct(b2['success'])}: {verdict}.")
    return " ".join(parts) if parts else "No detector column has both type-I and type-II results."
