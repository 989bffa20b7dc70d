"""``report.md`` and figures of ``safetynet sceneproof evaluate``: rendering only (the numbers come from the job)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .bundle import PatchAnalysis, SceneProof
from .labels import FAKE, REAL
from .tables import DEFENCES, RATE_KEYS, TABLE2_COLUMNS

__all__ = ["plot_figures", "write_report"]


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def plot_figures(out: Path, bundle: SceneProof, a_nat: PatchAnalysis, a_bim: PatchAnalysis, x_att: torch.Tensor,
             x_bim: torch.Tensor, y_att: torch.Tensor) -> None:
    from ..evaluation.plots import new_figure, plot_roc_curves, save_figure

    curves = {f"Det {ch} ({layer})": (a_nat.scores[ch], a_bim.scores[ch]) for ch, layer in
              (("A", "fc7"), ("B", "fc6"), ("C", "pool5"))}
    if a_nat.metzen is not None and a_bim.metzen is not None:
        curves["Subnet Det (fc7)"] = (a_nat.metzen, a_bim.metzen)
    plot_roc_curves(curves, out / "figures" / "roc_type1.png",
                    title="natural validation patches vs depth-only BIM")
    # Figure 4 style: a fake patch, its type-I adversarial depth, and the change.
    fig = new_figure(8.0, 4.2)
    pick = [int(i) for i in torch.nonzero(y_att == FAKE).squeeze(1)[:2]] + \
           [int(i) for i in torch.nonzero(y_att == REAL).squeeze(1)[:1]]
    for r, i in enumerate(pick):
        panels = [("RGB", x_att[i, :3].permute(1, 2, 0).numpy(), None),
                  ("depth (inverse)", x_att[i, 3].numpy(), "viridis"),
                  ("BIM depth", x_bim[i, 3].numpy(), "viridis"),
                  ("|change| x10", (10 * (x_bim[i, 3] - x_att[i, 3]).abs()).clamp(0, 1).numpy(), "magma")]
        top = float(max(x_att[i, 3].max(), x_bim[i, 3].max()))  # one colour scale for both depth panels
        for c, (title, img, cmap) in enumerate(panels):
            ax = fig.add_subplot(len(pick), 4, 4 * r + c + 1)
            ax.imshow(img, cmap=cmap, vmin=0, vmax=top if c in (1, 2) else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel("fake" if int(y_att[i]) == FAKE else "real", fontsize=8)
    save_figure(fig, out / "figures" / "depth_attack_examples.png")


def _rates_cells(cells: Mapping[str, float] | None) -> list[str]:
    if not cells:
        return ["N/A"] * 3
    return [_pct(cells.get(k)) for k in RATE_KEYS]


def write_report(path: Path, results: Mapping[str, Any], bundle: SceneProof, env: Mapping[str, Any]) -> Path:
    """Markdown report of :func:`evaluate_sceneproof`'s results; ``env`` is what results.json records."""
    from ..metrics import RATE_LABELS
    from ..evaluation.report import MarkdownReport, reproduce_paragraph
    from .train import SceneProofConfig

    tr = bundle.settings.get("training", {})
    rep = MarkdownReport(path, title="SceneProof: real vs fake RGB-D, with SafetyNet detectors")
    data = tr.get("data", {})
    tcfg = tr.get("config", {})
    split = SceneProofConfig.from_saved(tcfg)  # with older bundles' split settings restored
    rep.paragraph(
        "Everything below is measured on CPU by `safetynet sceneproof evaluate`; the bundle was trained by "
        "`safetynet sceneproof train`. Unit: 64x64 RGB-D **patches** of frames resized to "
        f"{bundle.size[0]}x{bundle.size[1]}, cut on a grid with stride {bundle.stride}, unless a table says frames. "
        f"Depth-only attacks: L∞ budget eps = {results['eps']:.3f} on the encoded (inverse-depth) channel.")
    rep.heading("Data")
    rep.paragraph(
        f"Training frames: real captures {data.get('real_train')} plus {data.get('sim_train_frames')} simulator sensor "
        "frames (a simulated Kinect capture of a synthetic room counts as a real capture; the noise-free renders are "
        "the test-only `rendered` fake). Validation frames (thresholds and the frame rule are calibrated here; "
        f"never trained on): real {data.get('real_val')} plus {data.get('sim_val_frames')} sensor frames of other "
        f"simulated rooms. " + (
            f"Sequences of at least {tcfg.get('long_sequence', 100)} frames (7-Scenes, box-scene) are "
            f"split by time: their last {split.val_tail:.0%} is validation, behind a {tcfg.get('guard', 0.04):.0%} "
            "guard band of dropped frames; other validation scenes are held out whole. "
            if split.val_tail > 0 else
            f"Validation sources are held out whole (one folder = one group): {', '.join(split.val_sources)}. ")
        + "Held-out captures (`rgbd-heldout/`) are used only in the last section.")
    reg = data.get("registration")
    if reg:
        rows = [{"scene": scene, "frames": r.get("frames"), "verdict": r.get("verdict"), "scale": r.get("scale"),
                 "shift y (px)": round(r.get("dy", 0.0) * bundle.size[0]), "shift x (px)": round(r.get("dx", 0.0) * bundle.size[1]),
                 "edge agreement before": r.get("identity_score"), "after": r.get("score")} for scene, r in reg.items()]
        rep.paragraph(
            "Depth-to-colour registration of the training rigs (`safetynet.data.rgbd.registration`: one similarity "
            "per scene laying depth discontinuities on image edges, estimated on its training frames, applied to its "
            "training and validation frames only when reliable). 7-Scenes ships depth in the IR camera's frame "
            "(its cameras are not calibrated); unregistered, its real pairs taught the classifier that aligned edges "
            "look fake. Pairs under test are never registered.")
        rep.table(rows, formats={"edge agreement before": "{:.3f}", "after": "{:.3f}"})
    v = results["validation"]
    rep.heading("Validation accuracy per kind (patches)")
    rep.table([{"kind": k, "patches": v["patches"].get(k), "accuracy": acc,
                "accuracy, real captures only": v["accuracy_real_captures_only"].get(k)}
               for k, acc in v["accuracy_per_kind"].items()],
              formats={"accuracy": _pct, "accuracy, real captures only": _pct})
    rep.paragraph("'real captures only' drops patches from simulated rooms; for fakes it keeps fakes made from real "
                  "validation frames.")

    rep.heading("Table 1: summary for Det A (fc7), patches")
    t1rows = []
    for r in results["table1"]:
        cells = {}
        for col in ("Non Attack", "Type I", "Type II"):
            for k, s in zip(RATE_KEYS, _rates_cells(r.get(col))):
                cells[f"{col} {RATE_LABELS[k]}"] = s
        t1rows.append({"Method": r["Method"], **cells})
    rep.table(t1rows)
    rep.paragraph(results.get("table1_note", ""))

    rep.heading("Table 2: natural and type-I adversarial patches (validation split)")
    rep.table([{k: r[k] for k in ("Test example type", "n", *TABLE2_COLUMNS)} for r in results["table2"]],
              formats={c: _pct for c in TABLE2_COLUMNS})
    rep.paragraph("B = fc6 detector, A = fc7 detector; a column is the share flagged as adversarial; 'A∨B, T' is "
                  "the share flagged among the patches the classifier labels True (real). Adversarial rows: "
                  "depth-only BIM-L∞ on the attacked subset (fakes pushed to 'real', reals to 'fake').")

    rep.heading("Table 3: fake kinds never used in training (patches of validation frames)")
    cols3 = ("Test example type", "n", *TABLE2_COLUMNS, "passes as real (A∨B)", "passes as real (ABC)")
    rep.table([{k: r.get(k) for k in cols3} for r in results["table3"]],
              formats={c: _pct for c in cols3[2:]})
    rep.paragraph(results.get("table3_note", ""))

    rep.heading("Table 4: type I / II, white-box and transfer attacks (patches)")
    rows = []
    for r in results["table4"]:
        row: dict[str, Any] = {"Method": r["Method"]}
        for d in DEFENCES:
            cells = r.get(d)
            keys = ("F->T", "T->F") if d == "Ori" else RATE_KEYS
            for k in keys:
                row[f"{d} {RATE_LABELS[k]}"] = _pct(cells.get(k)) if cells else "n/a"
        rows.append(row)
    rep.table(rows)
    sub = results["attacked_subset"]
    rep.paragraph(
        f"Attacked subset: {sub['n']} validation patches ({sub['real']} real, {sub['fake']} fake, fakes spread over "
        "the four training kinds). Gradient Descent (I): depth-only BIM on the classifier; (II): the paper's "
        "smoothed attack (sigmoid quantizer, widened RBF, calibrated thresholds) against each defence separately, "
        "judged by the real detectors at their calibrated thresholds; against Ori (no detector) the (II) row is a "
        "CW-PGD on the classifier. Every row runs on the evaluation engine (`safetynet.evaluation.engine`), the same "
        "as `safetynet robustness --dataset sceneproof`. Transfer: crafted on a surrogate classifier (another seed, half the width, same training data) "
        "and judged on the target; 'Subnet Det TF' also evades a Metzen detector fitted on the surrogate, "
        "'Finetune TF' a surrogate fine-tuned with an extra adversarial class (both fitted on validation patches "
        "outside the attacked subset). RGB channels of every attacked patch are bit-identical to the clean ones: "
        f"{sub['rgb_channels_bit_identical']}.")

    rep.heading("Frames: the verify decision on validation frames")
    fv = results["validation_frames"]
    rep.table([{"frames": k, "n": s["n"], "judged real": s["real"], "judged fake": s["fake"], "rejected": s["rejected"]}
               for k, s in fv.items()], formats={c: _pct for c in ("judged real", "judged fake", "rejected")})
    per = results.get("validation_real_frames_per_scene")
    if per:
        rep.paragraph("Real validation frames per scene:")
        rep.table([{"scene": k, "n": s["n"], "judged real": s["real"], "judged fake": s["fake"], "rejected": s["rejected"]}
                   for k, s in per.items()], formats={c: _pct for c in ("judged real", "judged fake", "rejected")})
    st = bundle.settings
    rep.paragraph(f"Rule: rejected if more than {st['reject_fraction']:.0%} of the patches are rejected by A, B or C; "
                  f"else real if the mean P(real) of accepted patches exceeds {st['real_threshold']:.3f} (calibrated "
                  "on these validation frames, so these frame numbers are optimistic).")

    ho = results.get("heldout")
    rep.heading("Held-out captures (rgbd-heldout/, never used for training or thresholds)")
    if ho and "frames" in ho:
        rep.paragraph(f"{ho['frames']} real frames: judged real {_pct(ho['real_frames']['real'])}, fake "
                      f"{_pct(ho['real_frames']['fake'])}, rejected {_pct(ho['real_frames']['rejected'])}.")
        rep.table([{"scene": s, "n": r["n"], "judged real": r["real"], "judged fake": r["fake"], "rejected": r["rejected"]}
                   for s, r in ho["per_scene"].items()], formats={c: _pct for c in ("judged real", "judged fake", "rejected")})
        rep.table([{"fake made from held-out frames": k, "n": r["n"], "judged fake or rejected": r["fake_or_rejected"],
                    "judged real": r["real"]} for k, r in ho["fakes"].items()],
                  formats={"judged fake or rejected": _pct, "judged real": _pct})
    else:
        rep.paragraph(str((ho or {}).get("skipped", "not run")))

    rep.heading("Reading these numbers")
    notes = []
    if ho and "frames" in ho:
        notes.append(f"Held-out real captures (other cameras and scenes) are judged real in "
                     f"{_pct(ho['real_frames']['real'])} of frames: the classifier has learned what the training "
                     "cameras' captures look like more than camera-independent image/depth consistency.")
    if per:
        notes.append("Real validation frames per scene: " + ", ".join(
            f"{k} {_pct(v['real'])} real" for k, v in per.items()) + ".")
    gd2 = next((r for r in results["table4"] if r["Method"] == "Gradient Descent (II)"), None)
    if gd2 and gd2.get("Det ABC"):
        notes.append(f"The white-box type-II attack gets {_pct(gd2['Det ABC']['F->T'])} of fake patches through Det "
                     "ABC as real: with the RBF width chosen by cross-validation the detectors are smooth enough "
                     "for the smoothed attack (see the SVM gammas in sceneproof.json); the paper's robustness claim "
                     "assumes narrow kernels.")
    rep.paragraph(" ".join(notes) or "n/a")
    rep.heading("Figures")
    rep.image(path.parent / "figures" / "roc_type1.png", "ROC of the detectors")
    rep.image(path.parent / "figures" / "depth_attack_examples.png", "depth-only attacks")
    rep.heading("Training and timing")
    rep.paragraph(f"Training seconds (one thread): {tr.get('seconds')}. Evaluation seconds: {results.get('seconds')}.")
    rep.heading("Reproduce")
    rep.paragraph(reproduce_paragraph(env))
    rep.paragraph(f"Environment: python {env.get('python')}, torch {env.get('torch')}, {env.get('machine')}, "
                  f"{env.get('torch_threads')} torch thread(s).")
    return rep.write()
