"""The paper's experiment pipeline (``safetynet demo``) end to end on a small model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from safetynet.cli import main
from safetynet.errors import InputError
from safetynet.exit_codes import EXIT_BAD_INPUT
from safetynet.experiment import ExperimentConfig, attack_grid, run_experiment
from safetynet.experiment.run import _stratified_order


@pytest.fixture(scope="module")
def digits_run(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = ExperimentConfig(dataset="digits", model=str(digits_checkpoint), layer="relu2", n_train=200, n_test=150,
                           metzen_epochs=2, seed=0, out=str(out))
    return run_experiment(cfg), out


def test_report_files_written(digits_run):
    results, out = digits_run
    report = (out / "report.md").read_text()
    for heading in ("## Attacks", "## Same-attack detection", "## Cross-attack generalisation", "classification confidence"):
        assert heading in report
    for png in ("success_vs_accuracy.png", "roc_svm-binary.png", "cross_attack_auc_metzen.png"):
        data = (out / "figures" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["seed"] == 0 and doc["results"]["clean"]["test_images"] == 150
    assert "environment" in doc and isinstance(doc["results"]["seconds"], float)


def test_numbers_are_consistent(digits_run):
    results, _ = digits_run
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
            # fooled & undetected can't exceed the bare classifier's fooling rate
            assert row["fooled_undetected"] <= row["adversary_success"] + 1e-12
    # The code SVM separates natural and DeepFool-L2 examples on this model better than chance.
    same = {r["attack"]: r for r in results["detectors"]["svm-binary"]["same_attack"]}
    assert max(r["auc"] for r in same.values()) > 0.7


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
