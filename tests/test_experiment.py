"""The paper's experiment pipeline (``safetynet demo``) end to end on a small model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import comparable_results
from safetynet.cli import main
from safetynet.errors import InputError
from safetynet.exit_codes import EXIT_BAD_INPUT
from safetynet.experiment import ExperimentConfig, attack_grid, run_experiment
from safetynet.experiment.splits import stratified_order as _stratified_order


def _spied_run(cfg: ExperimentConfig) -> tuple[dict, dict]:
    """Run the experiment, keeping what the job computed on the way: every attack unit's inputs and the
    clipped images it produced, and the detector scores handed to the report writer (so the reported
    numbers can be recomputed)."""
    from safetynet.attacks import batched as batched_mod
    from safetynet.experiment import report as report_mod
    from safetynet.experiment import units as units_mod

    seen: dict = {"attacks": []}
    attack_chunk, in_batches, write = units_mod.attack_chunk, batched_mod.attack_in_batches, report_mod.write_experiment_report
    clipped: list = []

    def spy_in_batches(*args, **kwargs):
        res = in_batches(*args, **kwargs)
        clipped.append(res)
        return res

    def spy_chunk(model, setting, x, y, *rest):
        arrays = attack_chunk(model, setting, x, y, *rest)
        res = clipped.pop()
        seen["attacks"].append({"setting": setting, "x": x, "y": y, "adversarial": res.clipped, "success": res.success,
                                "arrays": arrays, "model": model})
        return arrays

    def spy_write(out, cfg, results, settings, usable, scores, conf_scores, provenance):
        seen.update(scores=scores, conf_scores=conf_scores)
        return write(out, cfg, results, settings, usable, scores, conf_scores, provenance)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(units_mod, "attack_chunk", spy_chunk)
        mp.setattr(batched_mod, "attack_in_batches", spy_in_batches)
        mp.setattr(report_mod, "write_experiment_report", spy_write)
        results = run_experiment(cfg)
    # units run in order: per setting, the fit part's chunks, then the test part's (one chunk each here)
    for i, rec in enumerate(seen["attacks"]):
        rec["part"] = "train" if i % 2 == 0 else "test"
    assert {a["part"] for a in seen["attacks"]} == {"train", "test"} and "scores" in seen, "the spies saw nothing"
    return results, seen


@pytest.fixture(scope="module")
def digits_run(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = ExperimentConfig(dataset="digits", model=str(digits_checkpoint), layer="relu2", n_train=200, n_test=150,
                           metzen_epochs=2, seed=0, out=str(out), size_curve=[20, 60, 5000],
                           size_curve_attacks=["deepfool-l2"])
    results, seen = _spied_run(cfg)
    return results, out, seen


def _tables(report: str, heading: str) -> dict[str, list[dict[str, str]]]:
    """The Markdown tables under ``## heading``, keyed by their ``###`` sub-heading ("" if none)."""
    section = report.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[dict[str, str]]] = {}
    sub = ""
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("### "):
            sub = line[4:].strip()
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ") and "---" in lines[i + 1]:
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")))))
            tables[sub] = rows
    return tables


def _shown(cell: str, value: float) -> bool:
    """A report cell ("93.3%", "0.912") shows ``value`` to its printed precision."""
    pct = cell.endswith("%")
    text = cell.rstrip("%")
    decimals = len(text.split(".")[1]) if "." in text else 0
    shown = float(text) / (100 if pct else 1)
    return abs(shown - value) <= 0.5 * 10 ** -decimals / (100 if pct else 1) + 1e-12


@pytest.mark.slow  # the whole demo experiment (digits_run)
def test_report_tables_show_the_numbers_of_results_json(digits_run):
    results, out, _ = digits_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["seed"] == 0 and doc["results"]["clean"]["test_images"] == 150
    assert doc["results"]["attacks"] == json.loads(json.dumps(results["attacks"]))  # the file holds what was returned
    report = (out / "report.md").read_text()
    attacks = {r["attack"]: r for r in _tables(report, "Attacks")[""]}
    assert set(attacks) == {a["label"] for a in doc["results"]["attacks"]}
    for a in doc["results"]["attacks"]:
        row = attacks[a["label"]]
        assert _shown(row["success (test)"], a["success_rate_test"]), (row, a)
        assert _shown(row["success (train)"], a["success_rate_train"]), (row, a)
        assert int(row["adversarial test examples"]) == a["adversarial_test"]
        assert _shown(row["median L2"], a["median_l2"]), (row, a)
    same = _tables(report, "Same-attack detection")
    for det in doc["results"]["detectors"].values():
        rows = {r["attack"]: r for r in same[det["title"]]}
        for r in det["same_attack"]:
            shown = rows[r["label"]]
            for col, key in (("AUC", "auc"), ("detection acc.", "balanced_accuracy"), ("TPR", "tpr"), ("FPR", "fpr"),
                             ("W→A", "misclassified_accepted"), ("T→T rej", "correct_rejected")):
                assert _shown(shown[col], r[key]), (det["title"], col, shown[col], r[key])


@pytest.mark.slow  # the whole demo experiment (digits_run)
def test_success_rates_equal_rechecking_the_adversarials_on_the_model(digits_run):
    import torch

    results, _, seen = digits_run
    attacks = {a["key"]: a for a in results["attacks"]}
    assert len(seen["attacks"]) == 2 * len(attacks)
    for rec in seen["attacks"]:
        s, x, y, adv, model = rec["setting"], rec["x"], rec["y"], rec["adversarial"], rec["model"]
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            clean_logits, pred = model(x), model(adv).argmax(1)
        assert torch.equal(clean_logits.argmax(1), y)  # only natural (correctly classified) images are attacked
        fooled = pred != y
        if s.top_k:  # DeepFool-top-k: the label must also leave the clean top-k
            fooled &= (pred[:, None] != clean_logits.topk(s.top_k, dim=1).indices).all(1)
        assert np.array_equal(rec["arrays"]["success"], fooled.numpy()), s.key
        assert np.array_equal(rec["arrays"]["pred"], pred.numpy()), s.key
        delta = (adv - x).flatten(1)
        if s.eps is not None:  # the budget holds on the clipped images
            norm = delta.abs().amax(1) if s.family in ("FGSM", "BIM-Linf") else delta.norm(dim=1)
            assert (norm <= s.eps + 1e-5).all(), s.key
        a = attacks[s.key]
        assert a[f"success_rate_{rec['part']}"] == pytest.approx(fooled.double().mean().item(), abs=1e-12)
        if rec["part"] == "test":
            assert a["adversarial_test"] == int(fooled.sum())
            l2 = delta.norm(dim=1)[fooled].numpy()
            assert a["median_l2"] == pytest.approx(float(np.median(l2)), rel=1e-6)


@pytest.mark.slow  # the whole demo experiment (digits_run)
def test_auc_and_rates_equal_sklearn_on_the_detector_scores(digits_run):
    from sklearn.metrics import roc_auc_score

    def auc(nat, adv):
        return roc_auc_score(np.r_[np.zeros(len(nat)), np.ones(len(adv))], np.r_[nat, adv])

    results, _, seen = digits_run
    # W→A and T→T rej are over every attempt; "wrong" is the top-1 label on the adversarial (metrics.safetynet_rates)
    test_wrong = {r["setting"].key: r["arrays"]["pred"] != r["y"].numpy() for r in seen["attacks"]
                  if r["part"] == "test"}
    checked = 0
    for name, det in results["detectors"].items():
        scores = seen["scores"][name]
        keys = det["cross_attack"]["train"]
        for i, row in enumerate(det["same_attack"]):
            sc = scores[row["attack"]]
            nat, adv = sc["natural"], sc["adversarial"][row["attack"]]
            assert row["auc"] == pytest.approx(auc(nat, adv), abs=1e-9), (name, row["attack"])
            assert row["tpr"] == pytest.approx(np.mean(adv > 0)) and row["fpr"] == pytest.approx(np.mean(nat > 0))
            rejected, wrong = sc["all_attempts"][row["attack"]] > 0, test_wrong[row["attack"]]
            assert row["misclassified_accepted"] == pytest.approx(np.mean(wrong & ~rejected))
            assert row["correct_rejected"] == pytest.approx(np.mean(~wrong & rejected))
            # the calibrated operating point: the (k+1)-th largest held-out natural score, k = floor(fpr * n)
            cal, held_out = row["calibrated"], np.sort(sc["calibration"])[::-1]
            assert len(held_out) == results["provenance"]["natural_calibration"]
            assert cal["threshold"] == held_out[int(np.floor(0.05 * len(held_out) + 1e-9))]
            assert np.mean(sc["calibration"] > cal["threshold"]) <= 0.05
            assert cal["tpr"] == pytest.approx(np.mean(adv > cal["threshold"]))
            assert cal["fpr"] == pytest.approx(np.mean(nat > cal["threshold"]))
            assert cal["misclassified_accepted"] == pytest.approx(
                np.mean(wrong & ~(sc["all_attempts"][row["attack"]] > cal["threshold"])))
            for j, tested in enumerate(keys):  # the cross-attack matrix: trained on row i, tested on column j
                cross = auc(nat, sc["adversarial"][tested])
                assert det["cross_attack"]["auc"][i][j] == pytest.approx(cross, abs=1e-9), (name, row["attack"], tested)
                checked += 1
    assert checked >= 4 * 4
    conf = seen["conf_scores"]
    for row in results["confidence_baseline"]["rows"]:
        assert row["auc"] == pytest.approx(auc(conf["natural"], conf["adversarial"][row["attack"]]), abs=1e-9)


@pytest.mark.slow  # the whole demo experiment (digits_run)
def test_numbers_are_consistent(digits_run):
    results, _, _ = digits_run
    assert results["clean"]["test_accuracy"] > 0.9
    attacks = {a["key"]: a for a in results["attacks"]}
    # DeepFool is a minimisation attack without a budget: it fools (nearly) every natural image.
    assert attacks["deepfool-l2"]["success_rate_test"] > 0.95
    assert attacks["deepfool-top5"]["median_l2"] > attacks["deepfool-l2"]["median_l2"]
    for det in ("svm-binary", "svm-quaternary", "svm-pooled", "metzen"):
        d = results["detectors"][det]
        keys = d["cross_attack"]["train"]
        auc = np.asarray(d["cross_attack"]["auc"])
        assert auc.shape == (len(keys), len(keys)) and np.all((auc >= 0) & (auc <= 1))
        for i, row in enumerate(d["same_attack"]):
            assert row["attack"] == keys[i]
            assert row["auc"] == pytest.approx(auc[i, i])  # the diagonal is the same-attack result
            # wrong-and-accepted cannot exceed the bare classifier error rate on the same attempts
            assert row["misclassified_accepted"] <= row["misclassified"] + 1e-12
    # The code SVM separates natural and DeepFool-L2 examples on this model better than chance.
    same = {r["attack"]: r for r in results["detectors"]["svm-binary"]["same_attack"]}
    assert max(r["auc"] for r in same.values()) > 0.7


@pytest.mark.slow  # the whole demo experiment (digits_run)
def test_size_curve_rows_and_report(digits_run):
    results, out, _ = digits_run
    curve = results["size_curve"]
    assert [(r["n_per_class"], r["available"]) for r in curve] == [(20, True), (60, True), (5000, False)]
    assert curve[2]["natural_available"] == results["provenance"]["natural_fit"]
    full = next(r for r in results["detectors"]["svm-binary"]["same_attack"] if r["attack"] == "deepfool-l2")
    for r in curve[:2]:
        assert 0 <= r["auc"] <= 1 and 0 <= r["calibrated_tpr"] <= 1 and r["solver"] == "exact"
    # the same-attack detector saw every example; the curve's largest point is a subset of it
    assert curve[1]["n_per_class"] < full["train_natural"]
    report = (out / "report.md").read_text()
    assert "## Detection vs training-set size" in report and "n=5000" in report
    assert (out / "figures" / "size_curve.png").stat().st_size > 1000


def test_stratified_order_is_balanced_and_seeded():
    import torch

    labels = torch.arange(10).repeat_interleave(100)
    order = _stratified_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(1000))
    first = labels[order[:100]].bincount(minlength=10)
    assert first.min() >= 9 and first.max() <= 11
    assert torch.equal(order, _stratified_order(labels, seed=3))
    assert not torch.equal(order, _stratified_order(labels, seed=4))


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="grid"):
        attack_grid("huge")
    with pytest.raises(InputError, match="n_train"):
        run_experiment(ExperimentConfig(n_train=3, out=str(tmp_path)))
    code = main(["demo", "--dataset", "cifar10", "--out", str(tmp_path / "x")])
    assert code == EXIT_BAD_INPUT and not (tmp_path / "x" / "report.md").exists()




@pytest.mark.slow  # a second demo experiment, interrupted and resumed
def test_an_interrupted_run_resumes_to_identical_results(digits_run, digits_checkpoint, tmp_path):
    from safetynet.experiment import units as units_mod

    results, _, _ = digits_run
    cfg = ExperimentConfig(dataset="digits", model=str(digits_checkpoint), layer="relu2", n_train=200, n_test=150,
                           metzen_epochs=2, seed=0, out=str(tmp_path / "run"), size_curve=[20, 60, 5000],
                           size_curve_attacks=["deepfool-l2"])
    attack_chunk, calls = units_mod.attack_chunk, []

    def dies_on_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # what Ctrl-C or a killed session looks like to the job
        return attack_chunk(*args)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(units_mod, "attack_chunk", dies_on_the_fourth)
        run_experiment(cfg)
    cache = tmp_path / "run" / "cache"
    assert len(list(cache.glob("attack-*.npz"))) == 3 and not list(cache.glob(".*tmp*"))  # 3 units kept, no debris
    resumed = run_experiment(cfg)
    assert resumed["execution"]["units_cached"] == 2 + 3  # the natural pass and the three finished attack units
    assert comparable_results(resumed) == comparable_results(results)


def test_chunk_store_is_keyed_by_content_and_refuses_damaged_files(tmp_path):
    from safetynet.chunk_store import ChunkStore, fingerprint, model_fingerprint
    from safetynet.models.small import SmallCNN

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match="cache folder"):
        ChunkStore(tmp_path / "a-file")
    store = ChunkStore(tmp_path)
    key = {"model": "m", "indices": [1, 2, 3], "thresholds": {"a": np.arange(3.0)}}
    assert store.get("attack", key) is None
    store.put("attack", key, {"x": np.arange(4), "codes": np.ones((2, 3), np.uint8)})
    got = store.get("attack", key)
    assert np.array_equal(got["x"], np.arange(4)) and got["codes"].dtype == np.uint8
    # any change of what a unit depends on is another unit
    assert fingerprint({**key, "thresholds": {"a": np.arange(3.0) + 1e-7}}) != fingerprint(key)
    assert fingerprint({**key, "indices": [1, 2, 4]}) != fingerprint(key)
    assert fingerprint(dict(reversed(list(key.items())))) == fingerprint(key)
    a, b = SmallCNN(), SmallCNN()
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.fc1_linear.weight[0, 0] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)
    store.path("attack", key).write_bytes(b"not an npz")
    with pytest.raises(InputError, match="delete it"):
        store.get("attack", key)


def test_imagenet_panels_put_each_detector_at_its_top5_top1_and_trained_on_linf_points(monkeypatch, tmp_path):
    """Figure 2 D/E plot the same-attack accuracy against top-5 / top-1 success; F the row of the detector
    trained on the L∞ attack (or --train-attack) of the cross-attack matrix, against top-5 success."""
    from types import SimpleNamespace

    import safetynet.experiment.report as report
    from safetynet.experiment.config import attack_grid

    settings = attack_grid("imagenet")
    keys = [s.key for s in settings]
    n = len(keys)
    attacks = [{"key": k, "success_rate_test_top1": 0.9 - 0.1 * i, "success_rate_test_top5": 0.5 - 0.1 * i}
               for i, k in enumerate(keys)]
    bacc = [[0.5 + 0.01 * (10 * i + j) for j in range(n)] for i in range(n)]
    det = {"same_attack": [{"attack": k, "label": s.label, "balanced_accuracy": bacc[i][i]}
                           for i, (k, s) in enumerate(zip(keys, settings))],
           "cross_attack": {"train": keys, "test": keys, "balanced_accuracy": bacc}}
    results = {"attacks": attacks, "detectors": {d: det for d in ("svm-binary", "svm-quaternary", "svm-pooled", "metzen")}}
    seen = {}
    monkeypatch.setattr(report, "plot_success_vs_accuracy", lambda pts, path, title=None: seen.setdefault(path.stem, pts) and path)
    for wanted, row in ((None, keys.index("bim-linf-2")), ("fgsm-2", 0)):
        seen.clear()
        labels = {s.key: s.label for s in settings}
        report._imagenet_panels(results, labels, report._panel_train_attack(settings, SimpleNamespace(train_attack=wanted)),
                                tmp_path)
        assert {p["detector"] for p in seen["fig2d"]} == {"SafetyNet (binary codes)", "SafetyNet (quaternary codes)",
                                                          "Metzen et al. subnetwork"}
        for i, s in enumerate(settings):
            d = [p for p in seen["fig2d"] if p["attack"] == s.label]
            e = [p for p in seen["fig2e"] if p["attack"] == s.label]
            f = [p for p in seen["fig2f"] if p["attack"] == s.label]
            assert all(p["adversary_success"] == attacks[i]["success_rate_test_top5"] for p in d + f)
            assert all(p["adversary_success"] == attacks[i]["success_rate_test_top1"] for p in e)
            assert all(p["detector_accuracy"] == bacc[i][i] for p in d + e)
            assert all(p["detector_accuracy"] == bacc[row][i] for p in f)
