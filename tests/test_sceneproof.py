"""SceneProof model half: table arithmetic, the verify decision, depth-only attacks, train/evaluate end to end.

The training test uses the simulator only (no shared data needed) with a tiny configuration;
it checks that the pipeline runs and writes a bundle that loads, not that it learns much.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from safetynet.sceneproof.attacks import (
    depth_bim,
    depth_fgsm,
    depth_mask,
    image_channels_unchanged,
)
from safetynet.sceneproof.tables import (
    average_rows,
    table2_row,
    table3_row,
    table4_cells,
)
from safetynet.sceneproof.bundle import PatchAnalysis, SceneProof
from safetynet.sceneproof.frames import balanced_subset, frame_weights, split_by_scene
from safetynet.sceneproof.network import build_sceneproof_model, model_config
from safetynet.sceneproof.sampling import seam_ok
from safetynet.sceneproof.train import SceneProofConfig, train_sceneproof
from safetynet.sceneproof.verify import calibrate_real_threshold, crop_to_aspect, decide

TINY = {"real": False, "sim_frames": 24, "sim_val_frames": 8, "height": 64, "width_px": 80, "patch": 32,
        "stride": 16, "real_patches": 64, "fake_patches": 64, "rounds": 1, "regressor_epochs": 1, "width": 4,
        "hidden": 16, "epochs": 1, "det_natural": 32, "det_attacked": 48, "attack_steps": 3, "attack_eps": 0.1,
        "svm_cv_samples": 60, "metzen_epochs": 1, "surrogate_width": 4, "surrogate_epochs": 1}


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sceneproof-tiny")
    summary = train_sceneproof(SceneProofConfig(out=str(out), seed=0, **TINY))
    return out, summary


# ------------------------------------------------------------------------------- table arithmetic
def test_table2_row_hand_computed():
    # 5 patches: truth, prediction, flags of A and B.
    y_true = [1, 1, 0, 0, 0]
    y_pred = [1, 0, 0, 1, 1]
    a = [True, False, False, True, False]
    b = [False, False, True, True, False]
    row = table2_row(y_true, y_pred, a, b)
    assert row["n"] == 5
    assert row["Classifier Acc"] == pytest.approx(2 / 5)  # indices 0 and 2 correct
    assert row["A"] == pytest.approx(2 / 5) and row["B"] == pytest.approx(2 / 5)
    assert row["B∧A"] == pytest.approx(1 / 5)  # index 3
    assert row["A∨B"] == pytest.approx(3 / 5)  # indices 0, 2, 3
    # predicted True: indices 0, 3, 4 -> flagged 0 and 3
    assert row["A∨B, T"] == pytest.approx(2 / 3)


def test_table3_row_passes_as_real():
    y_pred = [1, 1, 0, 1]
    a = [True, False, False, False]
    b = [False, False, True, False]
    abc = [True, True, False, False]
    row = table3_row(y_pred, a, b, abc)
    assert row["Classifier Acc"] == pytest.approx(1 / 4)  # ground truth is fake for every row
    assert row["passes as real (A∨B)"] == pytest.approx(2 / 4)  # indices 1 and 3
    assert row["passes as real (ABC)"] == pytest.approx(1 / 4)  # index 3
    assert row["A∨B, T"] == pytest.approx(1 / 3)


def test_table4_cells_match_the_paper_definitions():
    # 4 real (1) and 4 fake (0) patches.
    y_true = [1, 1, 1, 1, 0, 0, 0, 0]
    y_pred = [1, 1, 0, 0, 1, 1, 0, 0]
    rejected = [True, False, True, False, True, False, False, True]
    cells = table4_cells(y_true, y_pred, rejected)
    assert cells["F->T"] == pytest.approx(1 / 4)  # fake, predicted real, not rejected: index 5
    assert cells["T->F"] == pytest.approx(1 / 4)  # real, predicted fake, not rejected: index 3
    assert cells["T->T reject"] == pytest.approx(1 / 4)  # real, predicted real, rejected: index 0
    ori = table4_cells(y_true, y_pred)  # no detector
    assert ori["F->T"] == pytest.approx(2 / 4) and ori["T->F"] == pytest.approx(2 / 4) and ori["T->T reject"] == 0


def test_average_rows_ignores_nan():
    rows = [{"x": 0.2, "y": math.nan}, {"x": 0.4}, {"x": None, "y": 0.5}]
    avg = average_rows(rows, ["x", "y", "z"])
    assert avg["x"] == pytest.approx(0.3) and avg["y"] == pytest.approx(0.5) and math.isnan(avg["z"])


def test_patch_analysis_flags():
    a = PatchAnalysis(p_real=np.zeros(3), pred=np.zeros(3, int),
                      scores={"A": np.array([1.0, -1, -1]), "B": np.array([-1.0, 2, -1]), "C": np.array([0.0, 3, -2])})
    assert a.flags("A").tolist() == [True, False, False]
    assert a.flags("AB").tolist() == [True, True, False]
    assert a.flags("ABC").tolist() == [True, True, False]  # margin 0 does not fire (strict >)
    assert a.all_flags("BC").tolist() == [False, True, False]


# ------------------------------------------------------------------------------- verify decision
def test_decide_rule():
    p = np.array([0.9, 0.8, 0.1, 0.95])
    assert decide(p, np.array([False] * 4), 0.5, 0.6) == ("real", pytest.approx(0.6875), 0.0)
    assert decide(p, np.array([False] * 4), 0.5, 0.7)[0] == "fake"
    # accepted patches only: 0.9 and 0.95 -> 0.925
    verdict, score, frac = decide(p, np.array([False, True, True, False]), 0.5, 0.7)
    assert verdict == "real" and score == pytest.approx(0.925) and frac == 0.5
    assert decide(p, np.array([True, True, True, False]), 0.5, 0.7)[0] == "rejected (adversarial)"
    assert decide(p, np.ones(4, bool), 0.99, 0.7)[0] == "rejected (adversarial)"  # nothing accepted


def test_calibrate_real_threshold_separable_and_overlapping():
    t, acc = calibrate_real_threshold([0.8, 0.9, 0.7], [0.1, 0.3, 0.2])
    assert acc == 1.0 and 0.3 <= t < 0.7
    t, acc = calibrate_real_threshold([0.8, 0.4], [0.6, 0.1])
    # best: threshold between 0.6 and 0.8 (real 1/2, fake 2/2) or between 0.1 and 0.4 (1, 1/2): 0.75 either way
    assert acc == pytest.approx(0.75)


def test_crop_to_aspect():
    img = torch.zeros(1, 3, 100, 200)
    dep = torch.zeros(1, 1, 100, 200)
    val = torch.zeros(1, 1, 100, 200, dtype=torch.bool)
    i, d, v = crop_to_aspect(img, dep, val, 4 / 3)
    assert i.shape[-2:] == (100, 133) and d.shape == v.shape == (1, 1, 100, 133)
    i, _, _ = crop_to_aspect(torch.zeros(1, 3, 300, 200), dep, val, 4 / 3)
    assert i.shape[-2:] == (150, 200)


# ------------------------------------------------------------------------------------- data helpers
def test_frame_weights_sqrt_by_source():
    scenes = ["k"] * 9 + ["sim-0-1", "sim-0-2", "sim-0-3", "sim-0-4"] + ["one"]
    w = frame_weights(scenes)
    assert w.sum() == pytest.approx(1.0)
    # sources k (9 frames), sim (4), one (1): weights 3 : 2 : 1
    assert w[:9].sum() == pytest.approx(3 / 6) and w[9:13].sum() == pytest.approx(2 / 6) and w[13] == pytest.approx(1 / 6)


def test_balanced_subset_caps_the_largest_scene():
    scenes = ["a"] * 10 + ["b"] * 3 + ["c"] * 2
    idx = balanced_subset(scenes, np.random.default_rng(0))
    kept = [scenes[i] for i in idx]
    assert kept.count("a") == 5 and kept.count("b") == 3 and kept.count("c") == 2
    idx = balanced_subset(scenes, np.random.default_rng(0), ratio=0.4)
    assert [scenes[i] for i in idx].count("a") == 2


def test_seam_ok():
    box = (1, 0, 0, 20, 20, 30, 30)  # donor, sy, sx, dy=20, dx=20, h=30, w=30
    assert seam_ok(box, 0, 0, 32)  # covers the top-left corner of the rectangle
    assert not seam_ok(box, 60, 60, 32)  # outside
    assert seam_ok(box, 0, 0, 64)  # contains the whole rectangle, so its border too
    assert not seam_ok((1, 0, 0, 0, 0, 100, 100), 10, 10, 32)  # fully inside the pasted content


def test_split_by_scene_holds_out_scenes_and_the_tail():
    from safetynet.data.rgbd.frame import RGBDFrame

    def fr(scene, i):
        return RGBDFrame(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool),
                         source=f"{scene}/{i:04d}", scene=scene)

    frames = [fr("long", i) for i in range(100)] + [fr("box", i) for i in range(5)] + [fr("x", 0)]
    train, val = split_by_scene(frames, ["box"], val_tail=0.2, guard=0.05)
    assert {f.scene for f in val} == {"long", "box"}
    tail = sorted(int(f.source.split("/")[1]) for f in val if f.scene == "long")
    head = sorted(int(f.source.split("/")[1]) for f in train if f.scene == "long")
    assert tail == list(range(80, 100)) and head == list(range(75))  # 5 guard frames dropped
    assert any(f.scene == "x" for f in train)


# --------------------------------------------------------------------------------- depth-only attacks
def _tiny_model(seed=0):
    return build_sceneproof_model(model_config(width=4, hidden=16), seed=seed).eval()


def test_depth_bim_changes_only_depth_bit_for_bit():
    torch.manual_seed(0)
    model = _tiny_model()
    x = torch.rand(6, 4, 32, 32)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    adv, _ = depth_bim(model, x, y, eps=0.05, steps=3)
    assert image_channels_unchanged(x, adv)
    assert torch.equal(adv[:, :3], x[:, :3])
    delta = (adv[:, 3] - x[:, 3]).abs()
    assert delta.max() > 0 and delta.max() <= 0.05 + 1e-6
    adv_f, _ = depth_fgsm(model, x, y, eps=0.05)
    assert image_channels_unchanged(x, adv_f) and (adv_f[:, 3] - x[:, 3]).abs().max() > 0
    assert depth_mask().flatten().tolist() == [0.0, 0.0, 0.0, 1.0]


def test_image_channels_unchanged_detects_a_one_ulp_change():
    x = torch.rand(2, 4, 8, 8)
    adv = x.clone()
    adv[1, 2, 3, 3] = torch.nextafter(adv[1, 2, 3, 3], torch.tensor(2.0))
    assert not image_channels_unchanged(x, adv)


def test_type2_on_bundle_detectors_keeps_rgb_and_is_judged_by_them(tiny_bundle):
    """The engine's type-II attack (SmoothedTypeII with the depth mask) on each calibrated bundle detector."""
    from safetynet.attacks import BIM
    from safetynet.attacks.adaptive import BPDA, SmoothedTypeII, TransferAttack
    from safetynet.sceneproof.task import bundle_defences

    out, _ = tiny_bundle
    bundle = SceneProof.load(out)
    torch.manual_seed(1)
    x = torch.rand(6, 4, bundle.patch, bundle.patch)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    defences = bundle_defences(bundle)
    attacks = [(SmoothedTypeII, k, letters) for k, letters in (("det_a", "A"), ("det_ens", "ABC"), ("subnet", "M"))]
    attacks += [(BPDA, k, letters) for k, letters in (("det_a", "A"), ("det_ens", "ABC"))]  # straight through fc7/fc6/pool5
    for attack, key, letters in attacks:
        d = defences[key]
        _, adv, ok = attack(d.target, steps=3, mask=depth_mask())(bundle.model, x, d.criterion(y), eps=0.05)
        assert image_channels_unchanged(x, adv), letters
        assert (adv[:, 3] - x[:, 3]).abs().max() <= 0.05 + 1e-6
        # success is judged by the real detectors at their calibrated thresholds
        a = bundle.analyze(adv, metzen=True)
        rejected = a.metzen > 0 if letters == "M" else a.flags(letters)
        assert np.array_equal(ok.numpy(), ~rejected & (a.pred != y.numpy())), letters
    _, adv_t, _ = TransferAttack(bundle.surrogate, BIM(steps=2, mask=depth_mask()))(bundle.model, x, y, eps=0.05)
    assert image_channels_unchanged(x, adv_t)


# ------------------------------------------------------------------------------ train + evaluate
def test_train_tiny_simulator_only_writes_a_loadable_bundle(tiny_bundle):
    out, summary = tiny_bundle
    names = {p.name for p in out.iterdir()}
    assert {"sceneproof.json", "classifier", "detectors", "metzen", "surrogate", "depth_regressor.safetensors"} <= names
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))  # no pickle anywhere
    doc = json.loads((out / "sceneproof.json").read_text())
    assert set(doc["thresholds"]) == {"A", "B", "C"} and 0 <= doc["real_threshold"] <= 1
    assert set(summary["classifier"]["val_patch_accuracy"]) >= {"real", "swap_depth", "predicted_depth",
                                                                 "insert_region", "shift_scale_depth"}
    bundle = SceneProof.load(out)
    assert list(bundle.net.layers) == ["fc7", "fc6", "pool5"]
    x = torch.rand(5, 4, bundle.patch, bundle.patch)
    a1, a2 = bundle.analyze(x, metzen=True), SceneProof.load(out).analyze(x, metzen=True)
    assert np.array_equal(a1.p_real, a2.p_real) and all(np.array_equal(a1.scores[k], a2.scores[k]) for k in "ABC")
    assert ((a1.p_real >= 0) & (a1.p_real <= 1)).all() and a1.metzen.shape == (5,)
    # the calibrated thresholds reject about target_fpr of the natural validation patches per detector
    for ch, rate in summary["detectors"]["val_natural_rejection"].items():
        assert rate <= doc["target_fpr"] + 1e-9, ch


def test_bundle_load_errors(tmp_path, tiny_bundle):
    from safetynet.errors import CheckpointError

    with pytest.raises(CheckpointError, match="sceneproof.json"):
        SceneProof.load(tmp_path)
    (tmp_path / "sceneproof.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        SceneProof.load(tmp_path)


def test_robustness_job_on_a_sceneproof_bundle_attacks_only_depth(tmp_path):
    """`safetynet robustness --dataset sceneproof`: Table 4 with F→T / T->F, every attack depth-only."""
    from safetynet.robustness import RobustnessConfig, run_robustness
    from safetynet.sceneproof.task import sceneproof_task

    # A little more training than the tiny bundle, whose one-epoch classifier calls every patch fake.
    out = tmp_path / "bundle"
    train_sceneproof(SceneProofConfig(out=str(out), seed=0, **{**TINY, "epochs": 4, "real_patches": 128,
                                                                 "fake_patches": 128, "width": 8}))
    cfg = RobustnessConfig(model=str(out), dataset="sceneproof", n=16, n_fit=80, norms=["linf", "l2"],
                           eps_linf=[0.1], eps_l2=[2.0], attacks=["bim", "bpda", "opgd", "hsja", "transfer-bim"],
                           steps=4, hsja_queries=60, hsja_steps=3, metzen_epochs=1, extend_eps=0,
                           out=str(tmp_path / "report"))
    res = run_robustness(cfg, task=sceneproof_task(str(out), n=16, n_fit=80, seed=0))
    recs = [r for r in res["records"] if r["attack"] != "none"]
    assert {r["attack"] for r in recs} == {"bim", "bpda", "opgd", "hsja", "transfer-bim"}
    assert all(r["outside_mask_unchanged"] is True for r in recs)
    assert all("F->T" in r and "T->F" in r for r in res["records"])
    assert "depth channel" in res["perturbed"] and list(res["surrogates"]) == ["bundle-surrogate"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Det A F→T" in report and "changes only the depth channel" in report
    # the white-box type-I attack fools the bare classifier on most patches within this budget
    bim = next(r for r in recs if r["attack"] == "bim" and r["defence"] == "ori" and r["norm"] == "linf")
    assert bim["success"] > 0.5


def test_evaluate_tables_agree_with_the_engine_and_direct_computation(tiny_bundle, tmp_path):
    """Table 4 of `sceneproof evaluate` is the robustness engine's output: same cells, same defences."""
    from safetynet.metrics import safetynet_rates
    from safetynet.robustness import RobustnessConfig, run_robustness
    from safetynet.sceneproof.evaluate import EvaluateConfig, evaluate_sceneproof
    from safetynet.sceneproof.labels import REAL
    from safetynet.sceneproof.task import sceneproof_task, validation_patches

    out, _ = tiny_bundle
    res = evaluate_sceneproof(EvaluateConfig(model=str(out), out=str(tmp_path / "eval"), n_attack=8, n_fit=40, steps=2,
                                             heldout=False))
    assert [r["Test example type"] for r in res["table2"]] == ["Natural RGBD, False", "Natural RGBD, True",
                                                               "Adversarial RGBD, False", "Adversarial RGBD, True"]
    assert res["attacked_subset"]["rgb_channels_bit_identical"] is True
    kinds = [r["Test example type"] for r in res["table3"]]
    assert kinds[:4] == ["zero D channel", "down-up sampled", "low quality JPEG", "rendered (simulator)"]
    assert [r["Method"] for r in res["table4"]] == [
        "Non Attack Data", "Gradient Descent (I)", "Surrogate FastSign TF (I)", "Surrogate GradDesc TF (I)",
        "Type I Average", "Gradient Descent (II)", "Surrogate Finetune TF (II)", "Surrogate Subnet Det TF (II)",
        "Type II Average"]  # the paper's layout
    # The robustness job on the same patches, budget and attack settings gives the same cells.
    bundle = SceneProof.load(out)
    eps = res["eps"]
    rob = run_robustness(RobustnessConfig(dataset="sceneproof", n=8, n_fit=40, norms=["linf"], eps_linf=[eps],
                                          attacks=["bim", "type2"], steps=2, sharpness=[10.0], gamma_scale=[0.1],
                                          extend_eps=0, batch_size=128, out=str(tmp_path / "rob")),
                         task=sceneproof_task(bundle, n=8, n_fit=40, seed=0))
    titles = {"ori": "Ori", "subnet": "Subnet Det", "det_a": "Det A", "det_ens": "Det ABC"}
    table4 = {r["Method"]: r for r in res["table4"]}
    for key, method in (("bim", "Gradient Descent (I)"), ("type2", "Gradient Descent (II)")):
        for r in (r for r in rob["records"] if r["attack"] == key):
            for rate in ("F->T", "T->F", "T->T reject"):
                got, want = table4[method][titles[r["defence"]]][rate], r[rate]
                assert (math.isnan(got) and math.isnan(want)) if want != want else got == want, (key, r["defence"], rate)
    # The non-attack row is safetynet_rates on the bundle's own verdicts for every validation patch.
    _, _, _, nat = validation_patches(bundle, None)
    a = bundle.analyze(nat.images(), metzen=True)
    for title, rej in (("Ori", np.zeros(len(a.pred), bool)), ("Det A", a.flags("A")), ("Det ABC", a.flags("ABC")),
                       ("Subnet Det", a.metzen > 0)):
        want = safetynet_rates(nat.y.numpy(), a.pred, rej, positive_class=REAL)
        for rate in ("F->T", "T->F"):
            assert table4["Non Attack Data"][title][rate] == pytest.approx(want[rate]), (title, rate)
    report = (tmp_path / "eval" / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Table 4", "## Reproduce"):
        assert heading in report
    assert "Det ABC F→T" in report  # one rate, one printed name (metrics.RATE_LABELS)


def test_train_cli_rejects_unknown_settings(tmp_path, capsys):
    """Every SceneProofConfig field is a flag; an unknown one or a value of the wrong type is argparse's usage error."""
    from safetynet.cli import main
    from safetynet.exit_codes import EXIT_USAGE

    for args, needle in ((["--bogus", "1"], "--bogus"), (["--set", "epochs=2"], "--set"), (["--epochs", "abc"], "--epochs")):
        with pytest.raises(SystemExit) as e:
            main(["sceneproof", "train", "--out", str(tmp_path), *args])
        assert e.value.code == EXIT_USAGE and needle in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or written


@pytest.mark.parametrize("bad", [{"n_fit": 0}, {"n_attack": -1}, {"steps": 1.5}, {"sharpness": float("nan")},
                                 {"gamma_scale": 0.0}, {"eps": -0.1}])
def test_evaluate_refuses_bad_settings_before_writing(bad, tmp_path):
    from safetynet.errors import InputError
    from safetynet.sceneproof.evaluate import EvaluateConfig, evaluate_sceneproof

    out = tmp_path / "eval"
    with pytest.raises(InputError, match=next(iter(bad))):
        evaluate_sceneproof(EvaluateConfig(out=str(out), **bad))
    assert not out.exists()  # nothing half-written


def test_split_by_scene_holds_out_a_whole_source_and_its_subfolders():
    """Naming a top-level folder keeps every scene under it on the validation side (one folder = one group);
    a name is not a bare string prefix (``nyu`` does not take ``nyu2``)."""
    from safetynet.data.rgbd.frame import RGBDFrame

    def fr(scene, i):
        return RGBDFrame(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool),
                         source=f"{scene}/{i:04d}", scene=scene)

    frames = ([fr("kitchen", i) for i in range(60)] + [fr("nyu/a", 0), fr("nyu/b", 0), fr("nyu2", 0)]
              + [fr("open3d", 0), fr("open3d/other_formats/TUM", 0)])
    train, val = split_by_scene(frames, ["nyu", "open3d"], val_tail=0.0, long_sequence=40)
    assert sorted(f.scene for f in val) == ["nyu/a", "nyu/b", "open3d", "open3d/other_formats/TUM"]
    assert sorted({f.scene for f in train}) == ["kitchen", "nyu2"] and len(train) == 61
    _, exact = split_by_scene(frames, ["nyu", "open3d"], val_tail=0.0, long_sequence=40, subscenes=False)
    assert [f.scene for f in exact] == ["open3d"]  # the legacy rule: scene ids match exactly


def test_new_bundles_validate_on_whole_sources_and_old_ones_keep_their_split():
    from safetynet.sceneproof.train import LEGACY_VAL_SCENES, VAL_SOURCES, SceneProofConfig

    cfg = SceneProofConfig()
    assert cfg.val_tail == 0.0 and cfg.val_sources == list(VAL_SOURCES)
    assert all("/" not in s for s in VAL_SOURCES)  # top-level folders only
    assert "7scenes-kitchen" not in VAL_SOURCES and "open3d" in LEGACY_VAL_SCENES
