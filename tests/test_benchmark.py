"""``safetynet benchmark`` end to end on the digits (tiny, fast), a user's own detector as a column,
Tramèr's consistency check by hand, ``--quick``'s settings and the CLI's bad-input errors."""

from __future__ import annotations

import json

import pytest
import torch

from safetynet import cli
from safetynet.benchmark import BenchmarkConfig, run_benchmark
from safetynet.benchmark.consistency import PUBLISHED_ROBUST_ACCURACY, consistency_checks
from safetynet.benchmark.run import strongest_curves
from safetynet.errors import InputError
from safetynet.evaluation.defence import Defence
from safetynet.exit_codes import EXIT_BAD_INPUT


class EnergyDetector:
    """A user's detector: minus the log-sum-exp of the logits (low energy = confident), standardised on natural images."""

    def __init__(self, model):
        self.model = model

    def fit(self, natural_images, adversarial_images=None):
        with torch.no_grad():
            e = -torch.logsumexp(self.model(natural_images), 1)
        self.mean_, self.std_ = float(e.mean()), float(e.std())
        return self

    def logits_and_score_torch(self, x):
        logits = self.model(x)
        return logits, (-torch.logsumexp(logits, 1).double() - self.mean_) / self.std_

    def decision_function(self, x):
        with torch.no_grad():
            return self.logits_and_score_torch(x)[1].numpy()

    def detect(self, x):
        return self.decision_function(x) > 0


def _tiny(out, model, **kw):
    base = dict(model=model, dataset="digits", n=24, n_fit=300, train_attacks=["fgsm", "bim"],
                test_attacks=["bim", "cw-l2", "square"], type1_eps=0.1, eps_linf=[0.05, 0.1], eps_l2=[0.5, 1.0],
                steps=5, cw_steps=15, cw_search=2, square_queries=20, sharpness=[10.0], gamma_scale=[0.1],
                metzen_epochs=1, mc_samples=4, out=str(out))
    base.update(kw)
    return BenchmarkConfig(**base)


@pytest.fixture(scope="module")
def digits_model(digits_checkpoint):
    from safetynet.models import load_checkpoint

    model, _ = load_checkpoint(digits_checkpoint)
    return model.eval()


@pytest.fixture(scope="module")
def run(digits_model, tmp_path_factory):
    from safetynet.data import load_digits

    out = tmp_path_factory.mktemp("bench")
    user = Defence("energy", digits_model, EnergyDetector(digits_model).fit(load_digits("train").images[-300:]))
    torch.manual_seed(0)
    cfg = _tiny(out, digits_model, detectors=["safetynet", "confidence", "mahalanobis", "lid", "kdbu"], n_adaptive=16)
    return cfg, run_benchmark(cfg, defences={"energy": user}), user, out


def test_benchmark_writes_the_four_parts_with_numbers_as_numbers(run):
    cfg, results, _, out = run
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["n"] == 24 and doc["environment"]["git_commit"] is not None and "argv" in doc["environment"]
    res = doc["results"]
    dets = {r["detector"] for r in res["detection"]}
    assert dets == {"safetynet", "confidence", "mahalanobis", "lid", "kdbu", "energy"}
    for r in res["detection"]:
        assert isinstance(r["auc"], float) and 0 <= r["auc"] <= 1 and 0 <= r["tpr"] <= 1
    # Trained on one, tested on others: every detector x training attack x test attack that fooled someone.
    fooled = [a for a, v in res["test_adversarials"].items() if v["n_adversarial"] > 0]
    assert "cw-l2" in fooled and "square" in fooled
    for det in ("safetynet", "mahalanobis"):
        for train in cfg.train_attacks:
            assert {r["tested_on"] for r in res["detection"] if r["detector"] == det and r["trained_on"] == train} == set(fooled)
    assert {r["trained_on"] for r in res["detection"] if r["detector"] == "energy"} == {"given"}
    # (b) curves at every budget of both norms, for every adaptive defence (the caller's too).
    got = {(c["defence"], c["norm"], round(c["eps"], 6)) for c in res["strongest"]}
    for d in ("ori", "safetynet", "mahalanobis", "lid", "kdbu", "confidence", "energy"):
        assert {(d, "linf", 0.05), (d, "linf", 0.1), (d, "l2", 0.5), (d, "l2", 1.0)} <= got
    assert res["flags"] and all(isinstance(f["triggered"], bool) for f in res["flags"])
    # Only the first n_adaptive test images face the adaptive rows; the clean accuracy they imply is theirs.
    from safetynet.data import load_dataset

    te = load_dataset("digits", "test")
    with torch.no_grad():
        acc16 = float((cfg.model(te.images_u8[:16].float() / 255).argmax(1) == te.labels[:16]).float().mean())
    assert res["clean"]["n_adaptive"] == 16 and res["clean"]["accuracy_adaptive"] == pytest.approx(acc16)
    assert any(c["norm"] == "l2" and c["detection_eps"] == 1.0 and c["exact"] for c in res["consistency"])
    text = (out / "report.md").read_text()
    for part in ("(a) Type-I detection", "(b) Adaptive", "(c) Reliability flags", "(d) Consistency", "RobustBench"):
        assert part in text
    for f in res["figures"].values():
        assert (out / f).is_file()


def test_an_interrupted_benchmark_resumes_from_its_cache(run, digits_model, tmp_path, monkeypatch):
    """A rerun on the same cache crafts nothing (every attack entry point raises) and gives the same
    numbers; with some cells lost (an interrupted run) it recomputes only those, to the same numbers."""
    import safetynet.attacks.adaptive as adaptive
    import safetynet.attacks.batched as batched
    import safetynet.evaluation.engine as engine

    cfg, results, user, out = run
    cache = out / "cache"
    files = sorted(cache.glob("*.npz"))
    assert {f.name.split("-")[0] for f in files} == {"type1", "cell"}
    # One type-I file per training attack and per test attack; one cell per (row, norm, eps).
    n_cells = len(cfg.adaptive) * (len(cfg.eps_linf) + len(cfg.eps_l2))
    assert sum(f.name.startswith("cell-") for f in files) == n_cells

    def boom(*a, **k):
        raise AssertionError("an attack ran although its result is cached")

    def rerun(dest):
        torch.manual_seed(0)
        c = dataclasses.replace(cfg, out=str(dest), cache=str(cache))
        return run_benchmark(c, defences={"energy": user})

    import dataclasses

    with monkeypatch.context() as m:
        for mod in (batched, engine):
            m.setattr(mod, "attack_in_batches", boom)
        m.setattr(adaptive, "sweep", boom)
        again = rerun(tmp_path / "again")
    for key in ("detection", "adaptive_records", "sweep", "strongest", "test_adversarials", "train_adversarials"):
        assert again[key] == results[key], key
    lost = [f for f in files if f.name.startswith("cell-")][::2]
    for f in lost:
        f.unlink()
    resumed = rerun(tmp_path / "resumed")
    assert resumed["adaptive_records"] == results["adaptive_records"] and resumed["sweep"] == results["sweep"]
    assert sorted(cache.glob("*.npz")) == files  # the lost cells were written again, under the same keys


def test_strongest_is_the_best_row_per_budget_and_thresholds_are_calibrated(run, digits_model):
    cfg, results, user, _ = run
    recs = [r for r in results["adaptive_records"] if r["attack"] != "none"]
    for c in results["strongest"]:
        same = [r["success"] for r in recs if (r["defence"], r["norm"], r["eps"]) == (c["defence"], c["norm"], c["eps"])]
        assert c["success"] == max(same)
    # The user's Defence was calibrated by the job on the held-out clean images: 5 % of them above the threshold.
    assert results["thresholds"]["energy@given"] == user.threshold
    n_cal = results["split"]["calibration"]
    assert n_cal >= 20
    # TPR/FPR are the shares above the calibrated threshold (an independent recount on the user's detector).
    rows = [r for r in results["detection"] if r["detector"] == "energy"]
    assert rows and all(r["threshold"] == user.threshold for r in rows)


def test_consistency_flags_by_hand():
    linf8, l2 = PUBLISHED_ROBUST_ACCURACY["linf", 8 / 255][0], PUBLISHED_ROBUST_ACCURACY["l2", 0.5][0]
    curves = [{"defence": "det", "norm": "l2", "eps": 1.0, "success": 0.0, "attack": "bpda"},
              {"defence": "det", "norm": "l2", "eps": 0.5, "success": 0.0, "attack": "bpda"},
              {"defence": "det", "norm": "linf", "eps": 16 / 255, "success": 0.5, "attack": "bpda"},
              {"defence": "det", "norm": "linf", "eps": 8 / 255, "success": 0.1, "attack": "bpda"},
              {"defence": "ori", "norm": "l2", "eps": 1.0, "success": 0.0, "attack": "bpda"}]
    out = consistency_checks(curves, clean_accuracy=0.9)
    by = {(c["norm"], round(c["detection_eps"], 6)): c for c in out}
    # L2 0.5 and L-inf 8/255 only indicative (published at eps, not eps/2); never the bare classifier
    assert set(by) == {("l2", 1.0), ("l2", 0.5), ("linf", round(16 / 255, 6)), ("linf", round(8 / 255, 6))}
    assert not by["l2", 0.5]["exact"]
    assert by["l2", 1.0]["triggered"] == (0.9 > l2) and by["l2", 1.0]["exact"]
    assert by["linf", round(16 / 255, 6)]["implied_robust_accuracy"] == pytest.approx(0.45)
    assert not by["linf", round(16 / 255, 6)]["triggered"] and by["linf", round(16 / 255, 6)]["exact"]
    assert by["linf", round(8 / 255, 6)]["triggered"] == (0.81 > linf8) and not by["linf", round(8 / 255, 6)]["exact"]


def test_strongest_curves_picks_the_maximum():
    recs = [{"attack": "a", "defence": "d", "norm": "linf", "eps": 0.1, "success": 0.2},
            {"attack": "b", "defence": "d", "norm": "linf", "eps": 0.1, "success": 0.5},
            {"attack": "none", "defence": "d", "norm": None, "eps": None, "success": 0.0}]
    assert strongest_curves(recs) == [{"defence": "d", "norm": "linf", "eps": 0.1, "success": 0.5, "attack": "b"}]


def test_quick_sets_only_what_was_left_at_its_default():
    q = BenchmarkConfig(quick=True)
    assert (q.dataset, q.n, q.steps, q.train_attacks) == ("cifar10-sample", 40, 10, ["fgsm", "bim"])
    q = BenchmarkConfig(quick=True, n=20, steps=3)
    assert (q.n, q.steps, q.square_queries) == (20, 3, 100)
    assert BenchmarkConfig().adaptive_train_attack == "bim"


@pytest.mark.parametrize("argv,needle", [
    (["--detectors", "safetynet", "nope"], "detectors must be distinct names"),
    (["--calibration", "1.5"], "calibration must be a share"),
    (["--target-fpr", "0"], "target_fpr must be in (0, 1)"),
    (["--dataset", "cifar10-sample", "--n", "900", "--n-fit", "200"], "exceeds the 1000 images"),
    (["--train-attacks", "fgsm", "--adaptive-train-attack", "bim"], "adaptive_train_attack 'bim' is not among"),
    (["--eps-linf", "8"], "pixel units"),
    (["--steps", "0"], "steps must be a positive integer"),
])
def test_cli_bad_input_exits_3_with_one_line(argv, needle, capsys, tmp_path):
    assert cli.main(["benchmark", *argv, "--out", str(tmp_path / "b")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()  # validated before anything is written


def test_user_defence_must_be_a_defence_with_a_detector(tmp_path, digits_model):
    with pytest.raises(InputError, match="must be a Defence with a detector"):
        run_benchmark(_tiny(tmp_path, digits_model), defences={"x": Defence("x", digits_model)})
    with pytest.raises(InputError, match="clashes"):
        run_benchmark(_tiny(tmp_path, digits_model), defences={"lid": Defence("lid", digits_model, EnergyDetector(digits_model))})


def test_narrow_sigma_column_is_safetynet_at_the_papers_small_sigma(digits_model):
    from safetynet.attacks import BIM
    from safetynet.benchmark.run import TITLES, fit_detector
    from safetynet.data import load_digits
    from safetynet.detectors.svm import GAMMA_MULTIPLIERS

    tr = load_digits("train")
    x, y = tr.images[:200], tr.labels[:200]
    _, xa, ok = BIM(steps=5, step_size=0.04)(digits_model, x, y, eps=0.1)
    cfg = _tiny("unused", digits_model)
    wide = fit_detector("safetynet", cfg, digits_model, x, y, xa[ok])
    narrow = fit_detector("safetynet-narrow", cfg, digits_model, x, y, xa[ok])
    (dw,), (dn,) = wide.detectors_.values(), narrow.detectors_.values()
    # Both kernels are multiples of 1 / (median squared code distance) on the same codes: the wide one
    # picked by cross-validation from GAMMA_MULTIPLIERS, the narrow one fixed at narrow_gamma (64).
    assert cfg.narrow_gamma == 64.0 and dn.solver_ == "exact"
    assert any(dn.gamma_ * m / cfg.narrow_gamma == pytest.approx(dw.gamma_, rel=1e-9) for m in GAMMA_MULTIPLIERS)
    assert dn.sigma_ <= dw.sigma_  # 64 is the grid's narrowest multiplier
    assert TITLES["safetynet-narrow"] == "SafetyNet (narrow σ)"
    with pytest.raises(InputError, match="narrow_gamma"):
        _tiny("unused", digits_model, narrow_gamma=0).validate()
