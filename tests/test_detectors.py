"""RBF-SVM code detector, fast kernel, persistence, ensembles and the SafetyNet wrapper.

References are independent: scipy's cdist for distances, sklearn's SVC for scores, sklearn's
estimator checks for the API, hand-computed values for ensembles, a real trained model plus
FGSM (written here with autograd) for the end-to-end test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from scipy.spatial.distance import cdist
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from safetynet._io import sha256_file
from safetynet.detectors import (CodeRBFKernel, CodeSVMDetector, DetectorEnsemble, REJECT, SafetyNet,
                                 squared_distances)
from safetynet.errors import CheckpointError, InputError


def make_codes(n: int = 300, d: int = 64, levels: int = 2, seed: int = 0, overlap: float = 0.6):
    """Two classes of codes with different per-unit level distributions."""
    rng = np.random.default_rng(seed)
    p0 = rng.dirichlet(np.ones(levels), size=d)
    p1 = overlap * p0 + (1 - overlap) * rng.dirichlet(np.ones(levels), size=d)
    y = np.arange(n) % 2
    u = rng.random((n, d))
    cdf = np.where(y[:, None, None] == 0, p0.cumsum(1)[None], p1.cumsum(1)[None])  # (n, d, L)
    X = (u[:, :, None] > cdf[:, :, :-1]).sum(2).astype(np.uint8)
    return X, y


# -- kernel ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 4, 200])
def test_squared_distances_match_scipy(levels):
    rng = np.random.default_rng(levels)
    for m, k, n in [(1, 1, 1), (10, 1, 10), (7, 3, 1), (33, 64, 17), (5, 1000, 9)]:
        X = rng.integers(0, levels, (m, k)).astype(np.uint8)
        Y = rng.integers(0, levels, (n, k)).astype(np.uint8)
        ref = cdist(X.astype(float), Y.astype(float), "sqeuclidean")
        np.testing.assert_array_equal(squared_distances(X, Y), ref)
        np.testing.assert_array_equal(squared_distances(np.asfortranarray(X), Y[::-1]), ref[:, ::-1])


@pytest.mark.parametrize("levels,d,gamma", [(2, 20, 0.3), (4, 20, 0.3), (250, 64, 1e-4)])
def test_kernel_scores_match_direct_formula(levels, d, gamma):
    # (250, 64): 64 * 249^2 possible distances, too many for the exp table -> the exp() path
    X, _ = make_codes(50, d, levels=levels)
    sv, alpha = X[:12], np.linspace(-1, 1, 12)
    ref = np.exp(-gamma * cdist(X, sv, "sqeuclidean")) @ alpha + 0.25
    k = CodeRBFKernel(sv, alpha, 0.25, gamma, chunk_size=7)  # several blocks
    np.testing.assert_allclose(k.decision_function(X), ref, rtol=0, atol=1e-12)
    assert (k._lut is None) == (levels == 250)


@pytest.mark.parametrize("int8_pays", [True, False])
def test_every_kernel_path_is_exact(int8_pays, monkeypatch):
    """The int8 product is used only where it is faster (a probe per process); both paths give the same exact scores."""
    from safetynet.detectors import kernel as kernel_mod

    if int8_pays and not kernel_mod._int_mm_available():
        pytest.skip("torch._int_mm is not available in this torch build")
    monkeypatch.setattr(kernel_mod, "_HAS_INT_MM", int8_pays)
    X, _ = make_codes(60, 300, levels=4)
    sv, alpha = X[:15], np.linspace(-1, 1, 15)
    k = CodeRBFKernel(sv, alpha, -0.5, 0.01, chunk_size=8)
    assert k._mode(3) == ("int8" if int8_pays else "float32")
    np.testing.assert_array_equal(k.squared_distances(X), cdist(X, sv, "sqeuclidean"))
    np.testing.assert_allclose(k.decision_function(X), np.exp(-0.01 * cdist(X, sv, "sqeuclidean")) @ alpha - 0.5,
                               rtol=0, atol=1e-12)


# -- detector vs sklearn ---------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 4])
@pytest.mark.parametrize("fixed", [True, False])
def test_decision_function_matches_sklearn(levels, fixed):
    X, y = make_codes(400, 96, levels=levels)
    Xq, _ = make_codes(300, 96, levels=levels, seed=1)
    params = {"gamma": 2.0 / 96, "C": 10.0} if fixed else {"random_state": 0}
    det = CodeSVMDetector(levels=levels, **params).fit(X, y)
    svc = SVC(kernel="rbf", gamma=det.gamma_, C=det.C_).fit(X.astype(float), y)  # independent fit
    ours, ref = det.decision_function(Xq), svc.decision_function(Xq.astype(float))
    assert np.abs(ours - ref).max() < 1e-4
    np.testing.assert_array_equal(det.predict(Xq), svc.predict(Xq.astype(float)))
    assert len(det.support_vectors_) == len(svc.support_vectors_)
    assert det.support_vectors_.dtype == np.uint8 and det.dual_coef_.shape == (1, len(det.support_vectors_))
    assert det.score(X, y) > 0.6  # learns something (ClassifierMixin.score = accuracy)


def test_precomputed_and_rbf_fit_paths_agree(monkeypatch):
    """Small training sets are fitted through a precomputed integer-distance kernel, large ones
    through libsvm's own RBF; both must give the same detector."""
    import safetynet.detectors.svm as svm

    X, y = make_codes(300, 64, levels=4)
    Xq, _ = make_codes(200, 64, levels=4, seed=3)
    fast = CodeSVMDetector(levels=4, gamma=0.05, C=3.0).fit(X, y)
    monkeypatch.setattr(svm, "_PRECOMPUTED_MAX", 10)
    slow = CodeSVMDetector(levels=4, gamma=0.05, C=3.0).fit(X, y)
    np.testing.assert_array_equal(fast.support_vectors_, slow.support_vectors_)
    np.testing.assert_allclose(fast.decision_function(Xq), slow.decision_function(Xq), rtol=0, atol=1e-8)


def test_labels_other_than_zero_one_keep_sign_convention():
    X, y = make_codes(200, 32)
    labels = np.array(["natural", "zadversarial"])[y]
    det = CodeSVMDetector(gamma=0.1, C=1.0).fit(X, labels)
    np.testing.assert_array_equal(det.classes_, ["natural", "zadversarial"])
    s = det.decision_function(X)
    np.testing.assert_array_equal(det.predict(X), np.where(s > 0, "zadversarial", "natural"))
    assert roc_auc_score(y, s) > 0.7  # positive scores point to classes_[1]


def test_cross_validation_selects_from_grid():
    X, y = make_codes(240, 48)
    det = CodeSVMDetector(param_grid={"gamma": [0.01, 0.1], "C": [1.0, 10.0]}, cv=3, random_state=0).fit(X, y)
    assert det.gamma_ in (0.01, 0.1) and det.C_ in (1.0, 10.0)
    assert len(det.cv_results_["params"]) == 4
    best = int(np.argmax(det.cv_results_["mean_test_score"]))
    assert det.cv_results_["params"][best] == {"gamma": det.gamma_, "C": det.C_}
    default = CodeSVMDetector(C=1.0, random_state=0).fit(X, y)  # gamma from the median-scaled grid
    med = np.median(cdist(X, X, "sqeuclidean")[~np.eye(len(X), dtype=bool)])
    assert any(np.isclose(default.gamma_, m / med) for m in (1, 4, 16, 64))


def test_sigma_is_the_paper_parametrisation():
    X, y = make_codes(100, 16)
    det = CodeSVMDetector(sigma=2.0, C=1.0).fit(X, y)
    assert det.gamma_ == pytest.approx(1 / 8) and det.sigma_ == pytest.approx(2.0)
    with pytest.raises(InputError, match="not both"):
        CodeSVMDetector(sigma=2.0, gamma=0.1).fit(X, y)


def test_max_train_subsamples():
    X, y = make_codes(300, 16)
    det = CodeSVMDetector(gamma=0.1, C=1.0, max_train=50, random_state=0).fit(X, y)
    assert len(det.support_vectors_) <= 50


def test_bad_inputs_raise_clear_errors():
    X, y = make_codes(100, 16)
    with pytest.raises(NotFittedError):
        CodeSVMDetector().decision_function(X)
    det = CodeSVMDetector(gamma=0.1, C=1.0, levels=2).fit(X, y)
    with pytest.raises(ValueError, match="17 features"):
        det.decision_function(np.zeros((3, 17), np.uint8))
    bad = X[:3].astype(float)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.decision_function(bad)
    with pytest.raises(InputError, match="binary"):
        det.decision_function(np.full((2, 16), 2, np.uint8))
    with pytest.raises(InputError, match="integer"):
        det.decision_function(X[:2] + 0.5)
    with pytest.raises(InputError, match="Negative"):
        det.decision_function(-X[:2].astype(int) - 1)
    with pytest.raises(InputError, match="binary"):
        CodeSVMDetector(levels=2).fit(X * 2, y)
    with pytest.raises(ValueError, match="one class"):
        CodeSVMDetector(gamma=0.1, C=1.0).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Only binary"):
        CodeSVMDetector(gamma=0.1, C=1.0).fit(X, np.arange(len(X)) % 3)
    with pytest.raises(ValueError, match="gamma"):
        CodeSVMDetector(gamma=-1.0).fit(X, y)


# Codes are integer levels, so the tags ask the checks for non-negative integer data
# (categorical + positive_only) and two classes (multi_class=False); no check is skipped.
@parametrize_with_checks([CodeSVMDetector(random_state=0), CodeSVMDetector(gamma=0.5, C=10.0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- persistence -----------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 4])
def test_save_load_round_trip(tmp_path, levels):
    X, y = make_codes(200, 37, levels=levels)  # 37: packing pads the last byte
    det = CodeSVMDetector(gamma=0.05, C=3.0, levels=levels).fit(X, y)
    det.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.json", "detector.safetensors"]
    loaded = CodeSVMDetector.load(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(X), det.decision_function(X))
    np.testing.assert_array_equal(loaded.support_vectors_, det.support_vectors_)
    assert loaded.get_params() == det.get_params() and loaded.levels_ == levels
    meta = json.loads((tmp_path / "detector.json").read_text())
    assert meta["format"] == "safetynet-code-svm" and meta["format_version"] == 1 and meta["gamma"] == 0.05


@pytest.fixture
def saved(tmp_path):
    X, y = make_codes(120, 20)
    CodeSVMDetector(gamma=0.1, C=1.0).fit(X, y).save(tmp_path)
    return tmp_path


def _edit_json(path, **changes):
    meta = json.loads((path / "detector.json").read_text())
    meta.update(changes)
    (path / "detector.json").write_text(json.dumps(meta))


def _rewrite_arrays(path, edit):
    arrays = load_file(str(path / "detector.safetensors"))
    edit(arrays)
    save_file(arrays, str(path / "detector.safetensors"))
    _edit_json(path, sha256=sha256_file(path / "detector.safetensors"))  # consistent checksum: shapes must catch it


def test_load_refuses_corrupted_file(saved):
    data = bytearray((saved / "detector.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (saved / "detector.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        CodeSVMDetector.load(saved)


@pytest.mark.parametrize("change,match", [({"format_version": 99}, "version"), ({"format": "pickle"}, "format"),
                                          ({"levels": 4}, "expected"), ({"n_support": 3}, "expected"),
                                          ({"gamma": -1}, "invalid"), ({"encoding": "thermometer"}, "encoding")])
def test_load_refuses_mismatched_metadata(saved, change, match):
    _edit_json(saved, **change)
    with pytest.raises(CheckpointError, match=match):
        CodeSVMDetector.load(saved)


def test_load_refuses_unknown_or_missing_files(saved, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "detector.json").write_text("{not json")
    (other / "detector.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt"):
        CodeSVMDetector.load(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        CodeSVMDetector.load(other / "nope")
    (saved / "detector.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        CodeSVMDetector.load(saved)


def test_load_refuses_bad_arrays(saved):
    _rewrite_arrays(saved, lambda a: a.update(extra=np.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected"):
        CodeSVMDetector.load(saved)


def test_load_refuses_wrong_dtype(saved):
    _rewrite_arrays(saved, lambda a: a.update(dual_coef=a["dual_coef"].astype(np.float32)))
    with pytest.raises(CheckpointError, match="dual_coef"):
        CodeSVMDetector.load(saved)


# -- ensembles -----------------------------------------------------------------------------------
class FixedScores:
    """A stand-in detector returning given margins, to check the combination rules by hand."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)

    def decision_function(self, X):
        return self.scores[np.asarray(X, dtype=int).ravel()]


def test_ensemble_any_and_all_by_hand():
    dets = {"A": FixedScores([1.0, -1.0, -2.0, 0.5]), "B": FixedScores([-1.0, -1.0, 3.0, 0.2])}
    X = {"A": np.arange(4)[:, None], "B": np.arange(4)[:, None]}
    any_ = DetectorEnsemble(dets, rule="any")
    np.testing.assert_array_equal(any_.decision_function(X), [1.0, -1.0, 3.0, 0.5])
    np.testing.assert_array_equal(any_.predict(X), [1, 0, 1, 1])
    all_ = DetectorEnsemble(dets, rule="all")
    np.testing.assert_array_equal(all_.decision_function(X), [-1.0, -1.0, -2.0, 0.2])
    np.testing.assert_array_equal(all_.predict(X), [0, 0, 0, 1])
    assert set(any_.scores(X)) == {"A", "B"}


def test_ensemble_fit_and_errors():
    X, y = make_codes(200, 24)
    ens = DetectorEnsemble({"a": CodeSVMDetector(gamma=0.1, C=1.0), "b": CodeSVMDetector(gamma=0.05, C=1.0)})
    ens.fit({"a": X, "b": X[:, ::-1]}, y)
    single = CodeSVMDetector(gamma=0.1, C=1.0).fit(X, y)
    np.testing.assert_allclose(ens.scores({"a": X, "b": X[:, ::-1]})["a"], single.decision_function(X))
    with pytest.raises(InputError, match="rule"):
        DetectorEnsemble({"a": single}, rule="majority")
    with pytest.raises(InputError, match="no codes"):
        ens.decision_function({"a": X})
    with pytest.raises(InputError):
        DetectorEnsemble({})


# -- SafetyNet end to end on a small real model -----------------------------------------------------
@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    from safetynet.train import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_model")
    torch.set_num_threads(1)
    metrics = train(TrainConfig(dataset="digits", arch="resnet20", epochs=4, lr=0.05, batch_size=64,
                                augment=False, out=str(out)))
    assert metrics["test_acc"] > 0.8
    return out


def fgsm(model, x, y, eps):
    """Fast gradient sign (Goodfellow et al. 2015), written inline as an independent reference."""
    model.eval()
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


@pytest.fixture(scope="module")
def digits_data(digits_model):
    from safetynet.data import load_dataset

    net = SafetyNet.from_checkpoint(digits_model)
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    x, y = tr.images_u8[:400].float() / 255, tr.labels[:400]
    xt, yt = te.images_u8[:200].float() / 255, te.labels[:200]
    return x, fgsm(net.model, x, y, 0.1), xt, fgsm(net.model, xt, yt, 0.1)


@pytest.fixture(scope="module")
def fitted_net(digits_model, digits_data):
    x, xa, _, _ = digits_data
    net = SafetyNet.from_checkpoint(digits_model, layers=["layer3.1.relu", "layer3.2.relu"], levels=2,
                                    detector_params={"random_state": 0}, batch_size=128)
    return net.fit(x, xa)


def test_safetynet_detects_fgsm_better_than_chance(fitted_net, digits_data):
    _, _, xt, xta = digits_data
    s = np.r_[fitted_net.decision_function(xt), fitted_net.decision_function(xta)]
    auc = roc_auc_score(np.r_[np.zeros(len(xt)), np.ones(len(xta))], s)
    assert auc > 0.75, auc
    assert fitted_net.detect(xta).mean() > fitted_net.detect(xt).mean() + 0.2


def test_classify_is_consistent_with_parts(fitted_net, digits_data):
    _, _, xt, xta = digits_data
    x = torch.cat([xt[:50], xta[:50]])
    out = fitted_net.classify(x)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, fitted_net.model(x))
    codes = fitted_net.codes(x)
    for n, det in fitted_net.detectors_.items():
        np.testing.assert_array_equal(out.scores[n], det.decision_function(codes[n]))
    np.testing.assert_array_equal(out.score, np.maximum(*out.scores.values()))  # rule "any"
    np.testing.assert_array_equal(out.detected, out.score > 0)
    expected = torch.where(torch.from_numpy(out.detected), torch.tensor(REJECT), out.logits.argmax(1))
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(fitted_net.predict(x), expected)


def test_safetynet_save_load_round_trip(fitted_net, digits_data, tmp_path):
    _, _, xt, xta = digits_data
    x = torch.cat([xt[:40], xta[:40]])
    fitted_net.save(tmp_path)
    loaded = SafetyNet.load(tmp_path)
    np.testing.assert_array_equal(loaded.decision_function(x), fitted_net.decision_function(x))
    torch.testing.assert_close(loaded.predict(x), fitted_net.predict(x))
    same_model = SafetyNet.load(tmp_path, model=fitted_net.model)
    np.testing.assert_array_equal(same_model.decision_function(x), fitted_net.decision_function(x))
    # the model weights are checked against the detector's record
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="differs"):
        SafetyNet.load(tmp_path)
    with pytest.raises(CheckpointError, match="format"):
        CodeSVMDetector.load(tmp_path)  # a SafetyNet folder is not a single detector


def test_smooth_score_is_differentiable_and_tends_to_detector(fitted_net, digits_data):
    _, _, xt, xta = digits_data
    x = torch.cat([xt[:10], xta[:10]])
    hard = fitted_net.decision_function(x)
    smooth = fitted_net.smooth_score(x, sharpness=1e12).detach().numpy()
    assert np.mean(np.abs(smooth - hard) < 1e-4) >= 0.9  # pointwise limit; float noise may flip a rare tie
    xg = x.clone().requires_grad_(True)
    logits, score = fitted_net.smooth_forward(xg, sharpness=10.0, gamma_scale=0.1)
    assert logits.shape == (20, 10) and score.shape == (20,)
    score.sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_safetynet_errors(digits_model, tmp_path):
    from safetynet.models import load_checkpoint

    model, _ = load_checkpoint(digits_model)
    x = torch.rand(4, 1, 8, 8)
    net = SafetyNet(model)
    assert net.layers == ("layer3.2.relu",)
    with pytest.raises(InputError, match="not fitted"):
        net.predict(x)
    with pytest.raises(InputError, match="no layer named"):
        SafetyNet(model, layers=["fc7"])
    with pytest.raises(InputError, match="detector_params"):
        SafetyNet(model, detector_params={"sigmaa": 1.0})
    with pytest.raises(InputError, match="rule"):
        SafetyNet(model, rule="some")
    with pytest.raises(InputError, match="NaN"):
        net.fit(x, torch.full_like(x, float("nan")))
    net.detector_params = {"gamma": 0.1, "C": 1.0}
    net.fit(x, 1 - x)
    with pytest.raises(InputError, match="model_config"):
        net.save(tmp_path)
    net.save(tmp_path, save_model=False)
    with pytest.raises(CheckpointError, match="model="):
        SafetyNet.load(tmp_path)
    np.testing.assert_array_equal(SafetyNet.load(tmp_path, model=model).decision_function(x), net.decision_function(x))
