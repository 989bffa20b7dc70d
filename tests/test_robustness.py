"""Reliability flags, surrogates and the ``robustness`` job (typed entry point and CLI) on digits."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from safetynet.errors import InputError
from safetynet.evaluation.flags import (
    check_blackbox_beats_whitebox,
    check_monotone_in_eps,
    check_randomness,
    check_softmax_output,
    check_unbounded_success,
    check_zero_gradients,
    log_flags,
    safetynet_real_score,
)


@pytest.fixture(scope="module")
def digits(digits_protected):
    return digits_protected


class StepModel(nn.Module):
    """A classifier on a rounded input: its gradient w.r.t. the input is exactly zero everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.round(x * 4).flatten(1) / 4)


# -- flags -------------------------------------------------------------------------------------------
def test_zero_gradient_flag_triggers_on_a_step_model_and_not_on_a_normal_one(digits):
    x = digits["xt"]
    flag = check_zero_gradients(lambda xb: StepModel()(xb)[:, 0], x)
    assert flag.triggered and flag.value == 1.0
    normal = check_zero_gradients(lambda xb: digits["model"](xb).logsumexp(1), x)
    assert not normal.triggered and normal.value == 0.0
    detached = check_zero_gradients(lambda xb: torch.zeros(len(xb)), x)  # no graph at all counts as zero
    assert detached.triggered
    with pytest.raises(InputError, match="one value per image"):
        check_zero_gradients(lambda xb: StepModel()(xb), x)


def test_zero_gradient_flag_on_safetynet(digits):
    from safetynet.attacks.adaptive import BPDAScore, SmoothScore

    net, x = digits["net"], digits["xt"]
    real = check_zero_gradients(safetynet_real_score(net), x)
    assert real.triggered and real.value == 1.0  # the quantizer: zero gradient almost everywhere
    np.testing.assert_allclose(safetynet_real_score(net)(x).detach().numpy(), net.decision_function(x), atol=1e-9)
    for score in (BPDAScore(net, "identity"), SmoothScore(net, 10.0, 0.1)):
        flag = check_zero_gradients(lambda xb, s=score: s(xb)[1].amax(1), x)
        assert not flag.triggered, flag.detail


def test_monotone_flag():
    f = check_monotone_in_eps([0.1, 0.3, 0.2], [0.2, 0.4, 0.5])  # unsorted eps: 0.2 at 0.1, 0.5 at 0.2, 0.4 at 0.3
    assert f.triggered and f.value == pytest.approx(0.1) and "0.3" in f.detail
    assert not check_monotone_in_eps([0.1, 0.2, 0.3], [0.2, 0.2, 0.5]).triggered
    assert not check_monotone_in_eps([0.1, 0.2], [0.30, 0.29], tol=0.02).triggered
    with pytest.raises(InputError):
        check_monotone_in_eps([0.1], [0.1, 0.2])


def test_blackbox_and_unbounded_flags():
    kinds = {"pgd": "white", "bpda": "white", "hsja": "black"}
    f = check_blackbox_beats_whitebox({"pgd": 0.3, "bpda": 0.25, "hsja": 0.5}, kinds)
    assert f.triggered and f.value == pytest.approx(0.2) and "hsja" in f.detail and "pgd" in f.detail
    assert not check_blackbox_beats_whitebox({"pgd": 0.3, "hsja": 0.5}, kinds, margin=0.25).triggered
    assert not check_blackbox_beats_whitebox({"pgd": 0.3}, kinds).triggered
    assert check_unbounded_success([1.0, 2.0], [0.5, 0.9]).triggered
    assert not check_unbounded_success([2.0, 1.0], [1.0, 0.5]).triggered  # the largest eps is the first entry


def test_randomness_and_softmax_flags(digits, caplog):
    x = digits["xt"]
    noisy = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)).train()
    f = check_randomness(lambda xb: noisy(xb), x)
    assert f.triggered
    g = check_randomness(lambda xb: digits["net"].classify(xb), x)  # logits, labels, scores: all deterministic
    assert not g.triggered
    soft = nn.Sequential(digits["model"], nn.Softmax(dim=1))
    assert check_softmax_output(soft, x).triggered
    assert not check_softmax_output(digits["model"], x).triggered
    with caplog.at_level(logging.WARNING, logger="safetynet.evaluation.flags"):
        log_flags([f, g])
    assert "randomized_defence" in caplog.text and caplog.text.count("reliability flag") == 1


# -- configuration -----------------------------------------------------------------------------------
def test_config_validation_and_default_layers():
    from safetynet.models import build_model
    from safetynet.robustness.run import RobustnessConfig, default_layers

    RobustnessConfig().validate()
    # model None: the shipped ResNet-20 for CIFAR-10 (full or sample), a tiny trained SmallCNN for digits,
    # the shipped bundle for sceneproof; the sample (no training split) skips the transfer rows
    for dataset, model in (("cifar10-sample", "cifar10-resnet20"), ("cifar10", "cifar10-resnet20"),
                           ("digits", None), ("sceneproof", None)):
        assert RobustnessConfig(dataset=dataset).model == model
    assert "transfer-bim" not in RobustnessConfig().attacks and "hsja" in RobustnessConfig().attacks
    assert "transfer-bim" in RobustnessConfig(dataset="digits").attacks
    assert RobustnessConfig(pool=0).pool is None and RobustnessConfig().pool == 4  # 0 = all units
    for bad, match in (({"dataset": "mnist"}, "dataset"), ({"n": 0}, "n must"), ({"pool": -1}, "pool"),
                       ({"attacks": ["transfer-fgsm"]}, "surrogate"),
                       ({"attacks": ["pgd"]}, "unknown attacks"), ({"norms": ["l1"]}, "norms"),
                       ({"eps_linf": [-0.1]}, "eps"), ({"sharpness": []}, "sharpness"), ({"levels": 3}, "levels"),
                       ({"target_fpr": 1.0}, "target_fpr"), ({"extend_eps": -1}, "extend_eps")):
        with pytest.raises(InputError, match=match):
            RobustnessConfig(**bad).validate()
    from safetynet.evaluation.task import EPS_DEFAULTS

    assert RobustnessConfig(dataset="cifar10", model="x").eps("linf", EPS_DEFAULTS["cifar10"]) == [2 / 255, 4 / 255, 8 / 255]
    assert RobustnessConfig(eps_l2=[2.0, 0.5]).eps("l2", EPS_DEFAULTS["cifar10"]) == [0.5, 2.0]
    assert default_layers(build_model("resnet20")) == (["layer3.2.relu"], ["layer3.0.relu", "layer3.1.relu", "layer3.2.relu"])
    assert default_layers(build_model("smallcnn")) == (["relu2"], ["relu2", "fc1"])


# -- the whole job -----------------------------------------------------------------------------------
def test_run_robustness_end_to_end(digits_checkpoint, tmp_path):
    from safetynet.evaluation.report import read_results_json
    from safetynet.evaluation.rows import ATTACK_ROWS
    from safetynet.robustness import RobustnessConfig, run_robustness

    cfg = RobustnessConfig(model=str(digits_checkpoint), dataset="digits", n=40, n_fit=300, eps_linf=[0.1, 0.2],
                           eps_l2=[1.0], sharpness=[1.0, 100.0], gamma_scale=[1.0], steps=15, hsja_queries=200,
                           hsja_steps=10, metzen_epochs=3, surrogate_epochs=3, extend_eps=1, out=str(tmp_path))
    res = run_robustness(cfg)
    report = (tmp_path / "report.md").read_text()
    for heading in ("## Table 4 layout, L∞, ε = 0.2", "## Table 4 layout, L2, ε = 1", "## Reliability flags",
                    "λ (sigmoid sharpness)", "## HopSkipJump queries per image", "Detection rate at 5% false positives"):
        assert heading in report, heading
    for label in ("Gradient descent (I): BIM", "Gradient descent (II): smoothed (paper)", "BPDA", "Orthogonal PGD",
                  "Code matching", "HopSkipJump", "FastSign TF", "GradDesc TF", "Finetune TF", "Subnet Det TF"):
        assert label in report, label
    assert (tmp_path / "figures" / "success_linf_det_a.png").stat().st_size > 1000
    doc = read_results_json(tmp_path / "results.json")
    assert doc["config"]["n"] == 40 and doc["environment"]["torch"]
    recs = doc["results"]["records"]
    # every row x defence x norm x eps exists (code matching only against SafetyNet, L∞ only)
    for key, row in ATTACK_ROWS.items():
        for norm in row.norms:
            for d in ("ori", "subnet", "det_a", "det_ens"):
                found = [r for r in recs if r["attack"] == key and r["defence"] == d and r["norm"] == norm]
                assert bool(found) == (key != "code-matching" or d in ("det_a", "det_ens")), (key, d, norm)
    for r in recs:
        for k in ("misclassified_accepted", "correct_rejected", "rejected"):
            assert 0.0 <= r[k] <= 1.0
        assert r["misclassified_accepted"] + r["correct_rejected"] <= r["misclassified_accepted"] + r["rejected"] + 1e-9
        if r["defence"] == "ori":
            assert r["rejected"] == 0.0
    # HopSkipJump stayed within its budget
    assert all(q["max"] <= 200 for q in doc["results"]["queries"])
    # thresholds calibrated at 5 % FPR on 20 % of the natural fit images, held out from detector training
    fitted = doc["results"]["fitted"]
    cal = fitted["calibration"]
    assert cal["fpr"] == 0.05
    assert cal["natural"] == round(0.2 * (cal["natural"] + fitted["natural_fit"]))
    for k, t in cal["thresholds"].items():
        assert doc["results"]["defences"][k]["threshold"] == t
    assert set(cal["thresholds"]) == {"subnet", "det_a", "det_a_narrow", "det_ens"}
    # the narrow column: gamma = 64 / median squared distance of its training codes, C cross-validated
    narrow, wide = fitted["det_a_narrow"]["detectors"], fitted["det_a"]["detectors"]
    assert narrow.keys() == wide.keys()
    for layer in narrow:
        assert narrow[layer]["gamma"] > wide[layer]["gamma"]
    assert "Det A (narrow σ)" in report
    assert "**Operating point**: every detector's threshold is calibrated" in report
    # the quantized detector's real path has no gradient; the BPDA surrogate does
    flags = {(f["name"], f["context"].get("defence")): f for f in res["flags"]}
    assert flags["zero_gradients_real_path", "det_a"]["triggered"]
    assert flags["zero_gradients_real_path", "det_ens"]["triggered"]
    assert not flags["zero_gradients_bpda_surrogate", "det_a"]["triggered"]
    assert not flags["zero_gradients_classifier", "ori"]["triggered"]
    # type II beats type I against Det A at the headline budget, and the report says so
    at = [r for r in recs if r["defence"] == "det_a" and r["norm"] == "linf" and r["eps"] == 0.2]
    best1 = max(r["success"] for r in at if r["kind"] == "I")
    best2 = max(r["success"] for r in at if r["kind"] == "II")
    assert best2 > best1 + 0.2
    assert "Det A, L∞ ε=0.2" in report and "type II beats type I" in report


def test_run_robustness_several_surrogates(digits_checkpoint, tmp_path):
    """Each surrogate gets its own transfer rows; the target used as its own surrogate replays white-box BIM."""
    from safetynet.evaluation.report import read_results_json
    from safetynet.robustness import RobustnessConfig, run_robustness
    from safetynet.evaluation.surrogates import train_surrogate

    other = tmp_path / "other"
    train_surrogate("smallcnn", 5, dataset="digits", out=other, epochs=3)
    cfg = RobustnessConfig(model=str(digits_checkpoint), dataset="digits", n=40, n_fit=200, norms=["linf"],
                           eps_linf=[0.1, 0.2], attacks=["bim", "transfer-bim", "transfer-fgsm"], steps=10,
                           metzen_epochs=2, surrogate_models=[str(digits_checkpoint), str(other)],
                           out=str(tmp_path / "run"))
    res = run_robustness(cfg)
    tags = list(res["surrogates"])
    assert tags == ["smallcnn-seed0", "smallcnn-seed5"]
    for tag in tags:
        info = res["surrogates"][tag]
        assert 0.5 < info["attacked_images_accuracy"] <= 1.0 and info["arch"] == "smallcnn"
    recs = read_results_json(tmp_path / "run" / "results.json")["results"]["records"]
    keys = {r["attack"] for r in recs}
    assert keys == {"none", "bim", "transfer-bim@smallcnn-seed0", "transfer-bim@smallcnn-seed5",
                    "transfer-fgsm@smallcnn-seed0", "transfer-fgsm@smallcnn-seed5"}
    for eps in (0.1, 0.2):
        def cell(attack, d="ori", eps=eps):
            return next(r for r in recs if r["attack"] == attack and r["defence"] == d and r["eps"] == eps)
        # the target is its own first surrogate: its "transfer" is the white-box BIM, image for image
        for d in ("ori", "subnet", "det_a", "det_ens"):
            assert cell("transfer-bim@smallcnn-seed0", d)["misclassified_accepted"] == cell("bim", d)["misclassified_accepted"]
        # a different network transfers worse than the white box at the same budget
        assert cell("transfer-bim@smallcnn-seed5")["success"] <= cell("bim")["success"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "GradDesc TF (I) from smallcnn-seed5" in report and "### Transfer surrogates" in report

    with pytest.raises(InputError, match="surrogate checkpoint folder"):
        RobustnessConfig(surrogate_models=[str(tmp_path / "missing")]).validate()
    with pytest.raises(InputError, match="not both"):
        RobustnessConfig(surrogate_models=[str(other)], surrogate_archs=["smallcnn"]).validate()


def test_cli_robustness_trains_a_tiny_model_and_reports(tmp_path, capsys):
    from safetynet.cli import main

    rc = main(["robustness", "--dataset", "digits", "--n", "20", "--n-fit", "200", "--attacks", "bim", "type2", "hsja",
               "--norms", "linf", "--eps-linf", "0.1", "0.2", "--sharpness", "10", "--gamma-scale", "1", "--steps", "10",
               "--hsja-queries", "100", "--hsja-steps", "5", "--metzen-epochs", "2", "--extend-eps", "0",
               "--out", str(tmp_path), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["report"] == str(tmp_path / "report.md") and (tmp_path / "report.md").is_file()
    assert "zero_gradients_real_path" in summary["flags_triggered"]
    assert (tmp_path / "classifier" / "model.safetensors").is_file()  # the tiny model trained for the run
    assert not (tmp_path / "surrogate").exists()  # no transfer row asked for, no surrogate trained


def test_cli_robustness_errors(tmp_path, capsys):
    from safetynet.cli import main

    from safetynet.exit_codes import EXIT_BAD_INPUT

    assert main(["robustness", "--dataset", "cifar10", "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "--data-dir" in capsys.readouterr().err
    assert main(["robustness", "--attacks", "pgd", "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "unknown attacks" in capsys.readouterr().err
    assert main(["robustness", "--attacks", "bim", "transfer-bim", "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "no training split for a surrogate" in capsys.readouterr().err
    assert main(["robustness", "--surrogate-model", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "surrogate checkpoint folder" in capsys.readouterr().err
    from safetynet.cli import build_parser

    args = build_parser().parse_args(["robustness", "--surrogate-arch", "resnet20", "vgg"])
    assert args.surrogate_archs == ["resnet20", "vgg"] and args.surrogate_models is None
    with pytest.raises(SystemExit) as e:
        main(["robustness", "--levels", "3"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["robustness", "--help"])
    assert e.value.code == 0


def test_run_robustness_takes_a_module_or_its_checkpoint_alike(digits_checkpoint, tmp_path):
    """The entry point accepts an nn.Module as well as a name: same records either way."""
    from safetynet.models import load_checkpoint
    from safetynet.robustness import RobustnessConfig, run_robustness

    kw = dict(dataset="digits", n=20, n_fit=120, norms=["linf"], eps_linf=[0.2], attacks=["bim"], steps=5,
              metzen_epochs=1)
    by_path = run_robustness(RobustnessConfig(model=str(digits_checkpoint), out=str(tmp_path / "a"), **kw))
    module, _ = load_checkpoint(digits_checkpoint)
    by_object = run_robustness(RobustnessConfig(model=module, out=str(tmp_path / "b"), **kw))
    assert by_object["records"] == by_path["records"]
    assert "passed as an object" in by_object["model"]
    assert json.loads((tmp_path / "b" / "results.json").read_text())["config"]["model"] == "<SmallCNN object>"


def test_calibration_split_is_disjoint_seeded_and_refuses_too_few():
    from safetynet.errors import InputError
    from safetynet.robustness import RobustnessConfig
    from safetynet.evaluation.defence import calibration_split

    def _calibration_split(n, cfg):
        return calibration_split(n, cfg.calibration, cfg.seed)

    cfg = RobustnessConfig(dataset="digits", calibration=0.25, seed=3)
    fit, cal = _calibration_split(200, cfg)
    assert len(cal) == 50 and len(fit) == 150 and set(fit.tolist()).isdisjoint(cal.tolist())
    assert sorted(fit.tolist() + cal.tolist()) == list(range(200))
    assert torch.equal(cal, _calibration_split(200, cfg)[1])
    assert not torch.equal(cal, _calibration_split(200, RobustnessConfig(dataset="digits", calibration=0.25, seed=4))[1])
    with pytest.raises(InputError, match="n-fit"):
        _calibration_split(22, cfg)
    with pytest.raises(InputError, match="calibration"):
        RobustnessConfig(dataset="digits", calibration=1.5).validate()
    with pytest.raises(InputError, match="not both"):
        RobustnessConfig(dataset="digits", gamma=0.1, sigma=2.0).validate()


def test_an_interrupted_robustness_run_resumes_from_its_cache(digits_checkpoint, tmp_path, monkeypatch):
    """Every (row, norm, eps) cell is saved as it ends: a rerun on the same cache attacks nothing and gives the
    same records (HopSkipJump's query summary included); cells lost to an interruption are recomputed alike;
    a changed setting never reads a stale cell."""
    import safetynet.attacks.adaptive as adaptive
    import safetynet.evaluation.engine as engine
    from safetynet.robustness import RobustnessConfig, run_robustness

    kw = dict(model=str(digits_checkpoint), dataset="digits", n=16, n_fit=120, norms=["linf"], eps_linf=[0.1, 0.2],
              attacks=["bim", "type2", "opgd", "hsja"], steps=4, hsja_queries=60, metzen_epochs=1, extend_eps=0,
              cache=str(tmp_path / "cache"))
    first = run_robustness(RobustnessConfig(out=str(tmp_path / "a"), **kw))
    cells = sorted((tmp_path / "cache").glob("cell-*.npz"))
    assert len(cells) == 4 * 2

    def boom(*a, **k):
        raise AssertionError("an attack ran although its cell is cached")

    with monkeypatch.context() as m:
        m.setattr(engine, "attack_in_batches", boom)
        m.setattr(adaptive, "sweep", boom)
        again = run_robustness(RobustnessConfig(out=str(tmp_path / "b"), **kw))
    for key in ("records", "sweep", "queries"):
        assert again[key] == first[key], key
    for f in cells[::3]:
        f.unlink()
    resumed = run_robustness(RobustnessConfig(out=str(tmp_path / "c"), **kw))
    assert resumed["records"] == first["records"] and resumed["queries"] == first["queries"]
    changed = run_robustness(RobustnessConfig(out=str(tmp_path / "d"), **{**kw, "steps": 5}))
    assert len(list((tmp_path / "cache").glob("cell-*.npz"))) == 2 * len(cells)
    assert changed["records"] != first["records"]


def test_task_cache_key_follows_weights_images_settings_and_surrogate_files(tmp_path):
    """What a cell's key depends on: a surrogate's weights (given as a module or as a checkpoint folder's
    files), a config field, the images; two modules with the same weights give the same key."""
    import dataclasses

    from safetynet._io import folder_sha256
    from safetynet.chunk_store import fingerprint
    from safetynet.evaluation.engine import task_cache_key
    from safetynet.evaluation.task import Task
    from safetynet.models.small import SmallCNN
    from safetynet.robustness import RobustnessConfig

    torch.manual_seed(0)
    model, sur = SmallCNN(), SmallCNN()
    x = torch.rand(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    task = Task("digits", model, "test", x, y, x, y, {}, surrogates={"s": sur})
    cfg = RobustnessConfig(dataset="digits", model=model)
    key = fingerprint(task_cache_key(task, x, cfg))
    twin = SmallCNN()
    twin.load_state_dict(model.state_dict())
    assert fingerprint(task_cache_key(task, x, dataclasses.replace(cfg, model=twin))) == key
    assert fingerprint(task_cache_key(task, x, dataclasses.replace(cfg, steps=cfg.steps + 1))) != key
    assert fingerprint(task_cache_key(task, x, dataclasses.replace(cfg, out="elsewhere"))) == key  # not a setting
    assert fingerprint(task_cache_key(dataclasses.replace(task, test_x=x + 0.1), x, cfg)) != key
    with torch.no_grad():
        next(sur.parameters()).add_(1e-3)
    assert fingerprint(task_cache_key(task, x, cfg)) != key
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "w.bin").write_bytes(b"a")
    before = folder_sha256(tmp_path / "ck")
    (tmp_path / "ck" / "w.bin").write_bytes(b"b")
    assert folder_sha256(tmp_path / "ck") != before
