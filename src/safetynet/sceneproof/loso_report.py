"""``report.md`` of ``safetynet sceneproof loso``: a row per held-out source, a column per fake kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

__all__ = ["write_loso_report"]


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}"


def _source_rows(results: Mapping[str, Any], model: str, kinds: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, r in results["per_source"].items():
        if model not in r:
            continue
        m = r[model]
        rows.append({"held-out source": name, "frames": r["frames"], "real accepted %": _pct(m["real_accepted"]),
                     **{k: _pct(m["caught"].get(k)) for k in kinds}})
    s = results["summary"][model]
    rows.append({"held-out source": "**mean over sources**", "frames": sum(r["frames"] for r in results["per_source"].values()),
                 "real accepted %": _pct(s["real_accepted_mean"]), **{k: _pct(s["caught_mean"].get(k)) for k in kinds}})
    return rows


def _targets(results: Mapping[str, Any], model: str, kinds: list[str]) -> str:
    s = results["summary"][model]
    t = results["targets"]
    real = s["real_accepted_mean"]
    missed = [k for k in kinds if s["caught_mean"].get(k) is not None and s["caught_mean"][k] < t["caught_per_kind"]]
    parts = [f"mean real accepted {_pct(real)} % (target ≥ {_pct(t['real_accepted_mean'])} %: "
             f"{'met' if real is not None and real >= t['real_accepted_mean'] else 'missed'})"]
    parts.append("every fake kind caught ≥ 90 %: " + ("met" if not missed else "missed for " + ", ".join(missed)))
    return "; ".join(parts) + "."


def write_loso_report(path: str | Path, results: Mapping[str, Any], environment: Mapping[str, Any]) -> Path:
    from ..evaluation.report import MarkdownReport, reproduce_paragraph

    train, unf = list(results["train_kinds"]), list(results["unfamiliar_kinds"])
    kinds = train + unf
    rep = MarkdownReport(path, "SceneProof: leave-one-source-out evaluation")
    rep.paragraph(
        f"Every real source (a top-level folder of `rgbd/`, one group, never split) is held out in turn: the model is "
        f"trained on the real frames of the other {len(results['sources']) - 1} sources and on fakes made from them, "
        "its threshold is chosen on grouped out-of-fold predictions over those training sources only, and it is "
        "tested on the held-out source's real frames (**real accepted**) and on fakes made from them (**caught** = "
        "judged fake, or abstained for lack of depth evidence). Unit: frames at "
        f"{results['working_size'][0]}x{results['working_size'][1]} (centre crop to 4:3, resize). Numbers are %; "
        "each source counts once in the means, whatever its frame count. `rgbd-heldout/` is not used here.")
    rep.paragraph(f"Fake kinds trained on: {', '.join(train)}. **Unfamiliar** (never trained on, like the paper's "
                  f"Table 3): {', '.join(unf)}." + ("" if results.get("predicted_depth_available") else
                                                    " predicted_depth: no depth regressor available, not run."))
    rep.heading("Feature model (camera-independent features + gradient-boosted trees)")
    rep.paragraph("Targets: " + _targets(results, "features", kinds))
    rep.table(_source_rows(results, "features", kinds))
    if "cnn" in results["summary"]:
        rep.heading("Shipped CNN bundle (the paper's 4-channel network with detectors A/B/C), same frames")
        rep.paragraph(results.get("cnn_note", "") + ". Targets: " + _targets(results, "cnn", kinds))
        rep.table(_source_rows(results, "cnn", kinds))
    rp = results.get("reporting")
    if rp:
        rep.heading("Reporting only: a feature model trained on all of rgbd/")
        rep.paragraph("Nothing was trained, tuned or chosen on these frames.")
        ho = rp.get("heldout", {})
        if "all" in ho:
            rows = []
            for name, r in [("all", ho["all"]), *ho["per_scene"].items()]:
                for model in ("features", "cnn"):
                    if model in r:
                        m = r[model]
                        rows.append({"rgbd-heldout": name, "model": model, "frames": m["n_real"],
                                     "real accepted %": _pct(m["real_accepted"]),
                                     **{k: _pct(m["caught"].get(k)) for k in kinds}})
            rep.table(rows)
        elif "skipped" in ho:
            rep.paragraph(f"rgbd-heldout: skipped ({ho['skipped']}).")
        if rp.get("fake_folders"):
            rep.paragraph("Folders of fakes (`rgbd-fakes/`, and the rendered `rgbd/icl-nuim-rendered`), share caught. "
                          "`gqcnn-primesense-inpainted` and `sygrid-real-industrial-bin` are real scenes with "
                          "post-processed depth: hard cases for either class.")
            rep.table([{"folder": g, "frames": r["frames"], "features caught %": _pct(r["features_caught"]),
                        **({"CNN caught %": _pct(r["cnn_caught"])} if "cnn_caught" in r else {})}
                       for g, r in rp["fake_folders"].items()])
    rep.heading("Reproduce")
    rep.paragraph(reproduce_paragraph(environment))
    return rep.write()
