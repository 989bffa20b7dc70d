"""Baseline detectors: rejection by confidence, and Metzen et al.'s detector subnetwork.

The Metzen tests use a SmallCNN trained for a few seconds on scikit-learn's digits and FGSM
examples made inline (x + ε sign ∇ loss), so they do not depend on the attacks package.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

from safetynet.data import load_digits
from safetynet.detectors.confidence import ConfidenceDetector
from safetynet.detectors.metzen import MetzenDetector, MetzenSubnetwork, auto_pools, classifier_fingerprint
from safetynet.errors import CheckpointError, InputError
from safetynet.metrics import roc_auc
from safetynet.models import build_model
from safetynet.taps import extract_activations

SMALL = (16, 32, 32)  # narrow subnetwork widths: same topology, fast on one core


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def classifier(digits):
    torch.set_num_threads(1)
    tr, _ = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = build_model("smallcnn")
        opt = torch.optim.Adam(m.parameters(), 3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            perm = torch.randperm(len(tr.images), generator=g)
            for i in range(0, len(perm), 64):
                idx = perm[i:i + 64]
                loss = F.cross_entropy(m(tr.images[idx]), tr.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    m.eval()
    return m


def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


@pytest.fixture(scope="module")
def fgsm_sets(classifier, digits):
    tr, te = digits
    n_tr, n_te = 500, 200
    return {
        "train": (tr.images[:n_tr], fgsm(classifier, tr.images[:n_tr], tr.labels[:n_tr], 0.1)),
        "test": (te.images[:n_te], fgsm(classifier, te.images[:n_te], te.labels[:n_te], 0.1)),
    }


@pytest.fixture(scope="module")
def fitted(classifier, fgsm_sets):
    nat, adv = fgsm_sets["train"]
    return MetzenDetector(classifier, layer="relu2", epochs=3, batch_size=64, widths=SMALL, seed=0).fit(nat, adv)


# --------------------------------------------------------------------------- Metzen: learning


def test_classifier_is_accurate(classifier, digits):
    _, te = digits
    acc = (classifier(te.images).argmax(1) == te.labels).float().mean().item()
    assert acc > 0.9  # sanity: the detector is attached to a real classifier


def test_metzen_separates_fgsm_from_natural(fitted, fgsm_sets, classifier, digits):
    nat, adv = fgsm_sets["test"]  # held-out digits, never seen in fit
    s_nat, s_adv = fitted.decision_function(nat), fitted.decision_function(adv)
    assert s_nat.shape == (len(nat),) and s_nat.dtype == np.float64
    assert roc_auc(s_nat, s_adv) > 0.9
    acc = ((fitted.predict(nat) == 0).sum() + (fitted.predict(adv) == 1).sum()) / (len(nat) + len(adv))
    assert acc > 0.8
    assert fitted.loss_history_[-1] < fitted.loss_history_[0]


def test_metzen_full_width_on_noise(classifier, digits):
    """Paper widths (96-192-192): natural vs heavy uniform noise is easy, must be far above chance."""
    tr, te = digits
    g = torch.Generator().manual_seed(1)

    def noisy(x):
        return (x + 0.3 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)

    det = MetzenDetector(classifier, layer="relu2", epochs=2, batch_size=64, seed=0).fit(tr.images[:200], noisy(tr.images[:200]))
    assert det.pools_ == 1 and det.subnet_.widths == (96, 192, 192)
    x = te.images[:150]
    assert roc_auc(det.decision_function(x), det.decision_function(noisy(x))) > 0.85


def test_fully_connected_tap(classifier, fgsm_sets):
    nat, adv = fgsm_sets["train"]
    det = MetzenDetector(classifier, layer="fc1", epochs=1, widths=SMALL).fit(nat[:100], adv[:100])
    assert det.activation_shape_ == (64, 1, 1) and det.pools_ == 0
    assert det.decision_function(nat[:5]).shape == (5,)


# --------------------------------------------------------------------------- Metzen: the classifier stays frozen


def _state_bytes(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_classifier_unchanged_bit_for_bit(digits):
    # A ResNet with batch norm: extraction in train mode would move its running statistics.
    tr, _ = digits
    torch.manual_seed(0)
    model = build_model("resnet8", in_channels=1, mean=(0.5,), std=(0.5,))
    model.train()  # the caller's mode must be restored, and BN buffers must not move
    before = _state_bytes(model)
    fp = classifier_fingerprint(model)
    x = tr.images[:64]
    det = MetzenDetector(model, layer="layer3.0.relu", epochs=2, batch_size=32, widths=SMALL).fit(x, (x + 0.2).clamp(0, 1))
    det.decision_function(x)
    xg = x[:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(det.score_torch(xg).sum(), xg)  # the type-II attack path
    assert g.abs().sum() > 0
    after = model.state_dict()
    assert model.training, "the caller's train/eval mode must be restored"
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"classifier tensor {k} changed"
    assert classifier_fingerprint(model) == fp == det.classifier_sha256_
    assert all(p.grad is None for p in model.parameters())


def test_only_subnetwork_is_trained(classifier, fgsm_sets):
    nat, adv = fgsm_sets["train"]
    det_a = MetzenDetector(classifier, layer="relu2", epochs=1, widths=SMALL, seed=3).fit(nat[:64], adv[:64])
    det_b = MetzenDetector(classifier, layer="relu2", epochs=1, widths=SMALL, seed=3).fit(nat[:64], adv[:64])
    # Seeded: identical subnetworks; the subnetwork is frozen after fit.
    for (k, a), (_, b) in zip(det_a.subnet_.state_dict().items(), det_b.subnet_.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in det_a.subnet_.parameters())


# --------------------------------------------------------------------------- Metzen: scoring paths


def test_score_paths_agree_and_gradient_flows(fitted, fgsm_sets, classifier):
    nat, _ = fgsm_sets["test"]
    x = nat[:16]
    s = fitted.decision_function(x)
    _, acts = extract_activations(classifier, x, "relu2", flatten=False)
    np.testing.assert_allclose(fitted.decision_function_from_activations(acts["relu2"]), s, rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    st = fitted.score_torch(xg)
    np.testing.assert_allclose(st.detach().double().numpy(), s, rtol=1e-4, atol=1e-4)
    (g,) = torch.autograd.grad(st.sum(), xg)
    assert g.shape == x.shape and g.abs().sum() > 0
    p = fitted.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(fitted.predict(x), (s > 0).astype(int))


def test_save_load_round_trip(fitted, fgsm_sets, classifier, tmp_path):
    nat, adv = fgsm_sets["test"]
    fitted.save(tmp_path / "det")
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == ["detector.json", "detector.safetensors"]
    loaded = MetzenDetector.load(tmp_path / "det", classifier)
    x = torch.cat([nat[:50], adv[:50]])
    np.testing.assert_array_equal(loaded.decision_function(x), fitted.decision_function(x))
    assert loaded.get_params()["widths"] == SMALL and loaded.layer == "relu2"
    # Another classifier: refused unless asked.
    other = build_model("smallcnn")
    with pytest.raises(CheckpointError, match="another classifier"):
        MetzenDetector.load(tmp_path / "det", other)
    MetzenDetector.load(tmp_path / "det", other, check_classifier=False)
    # Corrupt or missing files: clear errors, never a half-loaded detector.
    (tmp_path / "det" / "detector.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        MetzenDetector.load(tmp_path / "det", classifier)
    with pytest.raises(CheckpointError, match="not a saved Metzen detector"):
        MetzenDetector.load(tmp_path / "nothing", classifier)


def test_sklearn_clone(fitted):
    c = clone(fitted)
    assert c.get_params()["epochs"] == 3 and not hasattr(c, "subnet_")


# --------------------------------------------------------------------------- Metzen: bad inputs


def test_metzen_bad_inputs(classifier, fitted, fgsm_sets):
    nat, adv = fgsm_sets["train"]
    with pytest.raises(InputError, match="not fitted"):
        MetzenDetector(classifier, layer="relu2").decision_function(nat[:2])
    with pytest.raises(InputError, match="no layer named"):
        MetzenDetector(classifier, layer="nope").fit(nat[:8], adv[:8])
    with pytest.raises(InputError, match="epochs"):
        MetzenDetector(classifier, layer="relu2", epochs=0).fit(nat[:8], adv[:8])
    with pytest.raises(InputError, match="lr"):
        MetzenDetector(classifier, layer="relu2", lr=-1.0).fit(nat[:8], adv[:8])
    with pytest.raises(InputError, match="widths"):
        MetzenDetector(classifier, layer="relu2", widths=(8, 8)).fit(nat[:8], adv[:8])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        fitted.decision_function(nat[:4] * 255)
    with pytest.raises(InputError, match="NaN"):
        fitted.decision_function(torch.full_like(nat[:2], float("nan")))
    with pytest.raises(InputError, match="shape"):
        fitted.decision_function(nat[0])
    with pytest.raises(InputError, match="fitted on"):
        fitted.decision_function_from_activations(torch.zeros(2, 3, 8, 8))
    with pytest.raises(InputError, match="too small"):
        MetzenDetector(classifier, layer="relu2", pools=2, widths=SMALL).fit_activations(torch.rand(4, 2, 3, 3), torch.rand(4, 2, 3, 3))
    with pytest.raises(InputError, match="differ in shape"):
        MetzenDetector(classifier, layer="relu2", widths=SMALL).fit_activations(torch.rand(4, 2, 8, 8), torch.rand(4, 3, 8, 8))
    with pytest.raises(InputError, match="0 rows"):
        MetzenDetector(classifier, layer="relu2", widths=SMALL).fit_activations(torch.rand(0, 2, 8, 8), torch.rand(4, 2, 8, 8))


def test_subnetwork_topology():
    net = MetzenSubnetwork(64, pools=1)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 192, 192, 1]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 + [(1, 1)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    assert net(torch.rand(2, 64, 8, 8)).shape == (2,)
    assert (auto_pools(32, 32), auto_pools(16, 16), auto_pools(8, 8), auto_pools(2, 2), auto_pools(1, 1)) == (2, 2, 1, 0, 0)


# --------------------------------------------------------------------------- confidence


def test_confidence_score_is_one_minus_max_softmax():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 10, generator=g)
    det = ConfidenceDetector(threshold=0.5).fit(logits)
    ref = 1 - torch.softmax(logits.double(), 1).max(1).values.numpy()
    np.testing.assert_allclose(det.decision_function(logits), ref, rtol=1e-12, atol=1e-12)
    # Same numbers from probabilities, and from numpy input.
    probs = torch.softmax(logits.double(), 1).numpy()
    det_p = ConfidenceDetector(threshold=0.5, inputs="probs").fit(probs)
    np.testing.assert_allclose(det_p.decision_function(probs), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(det.predict(logits), (ref > 0.5).astype(int))
    assert det.threshold_ == 0.5 and det.confidence_threshold_ == 0.5


def test_confidence_hand_example():
    # Two classes, logits (0, 0) -> p_max = 1/2, score 1/2; (log 3, 0) -> p_max = 3/4, score 1/4;
    # (log 9, 0) -> p_max = 9/10, score 1/10.
    logits = np.array([[0.0, 0.0], [np.log(3), 0.0], [np.log(9), 0.0]])
    det = ConfidenceDetector(threshold=0.2).fit(logits)
    np.testing.assert_allclose(det.decision_function(logits), [0.5, 0.25, 0.1])
    np.testing.assert_array_equal(det.predict(logits), [1, 1, 0])
    # Huge logits must not overflow the softmax.
    np.testing.assert_allclose(det.decision_function(np.array([[1000.0, 0.0]])), [0.0], atol=1e-12)


def test_confidence_threshold_for_target_fpr():
    g = torch.Generator().manual_seed(1)
    nat = 4 * torch.randn(400, 10, generator=g)
    for fpr in (0.0, 0.01, 0.05, 0.2):
        det = ConfidenceDetector(target_fpr=fpr).fit(nat)
        flagged = det.predict(nat).mean()
        assert flagged <= fpr + 1e-12
        assert flagged >= fpr - 1 / 400 - 1e-12  # continuous scores: the budget is used up to one example
    # Labels: only natural rows calibrate the threshold.
    adv = 0.01 * torch.randn(100, 10, generator=g)  # near-uniform softmax: low confidence
    both = ConfidenceDetector(target_fpr=0.05).fit(torch.cat([nat, adv]), np.r_[np.zeros(400), np.ones(100)].astype(int))
    assert both.threshold_ == ConfidenceDetector(target_fpr=0.05).fit(nat).threshold_
    assert both.predict(adv).mean() == 1.0


def test_confidence_baseline_as_a_defence(classifier, fgsm_sets):
    """The confidence baseline as a Defence column: rejects exactly where ConfidenceDetector.predict does,
    and calibrating the Defence at the detector's own FPR keeps that operating point."""
    from safetynet.evaluation.defence import ConfidenceOnImages, Defence

    nat, adv = fgsm_sets["test"]
    with torch.no_grad():
        det = ConfidenceDetector(target_fpr=0.1).fit(classifier(fgsm_sets["train"][0]))
        logits_adv = classifier(adv)
    with pytest.raises(InputError, match="fitted"):
        ConfidenceOnImages(classifier, ConfidenceDetector())
    d = Defence("confidence", classifier, ConfidenceOnImages(classifier, det))
    v = d.evaluate(adv)
    assert np.array_equal(v.rejected, det.predict(logits_adv).astype(bool))
    assert np.array_equal(v.pred, logits_adv.argmax(1).numpy())
    d.calibrate(fgsm_sets["train"][0], fpr=0.1)  # same natural images, same FPR: the same decisions
    assert np.array_equal(d.detect(adv), det.predict(logits_adv).astype(bool))


def test_confidence_bad_inputs():
    with pytest.raises(InputError, match="not fitted"):
        ConfidenceDetector().decision_function(np.zeros((2, 3)))
    with pytest.raises(InputError, match="num_classes"):
        ConfidenceDetector().fit(np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        ConfidenceDetector().fit(np.array([[0.0, np.nan]]))
    with pytest.raises(InputError, match="probabilities"):
        ConfidenceDetector(inputs="probs").fit(np.array([[0.5, 0.6]]))
    with pytest.raises(InputError, match="target_fpr"):
        ConfidenceDetector(target_fpr=1.5).fit(np.zeros((3, 2)))
    with pytest.raises(InputError, match="inputs"):
        ConfidenceDetector(inputs="softmax").fit(np.zeros((3, 2)))
    with pytest.raises(InputError, match="classes"):
        ConfidenceDetector().fit(np.zeros((3, 2))).decision_function(np.zeros((3, 4)))
    with pytest.raises(InputError, match="natural"):
        ConfidenceDetector().fit(np.zeros((3, 2)), y=[1, 1, 1])
    assert clone(ConfidenceDetector(target_fpr=0.1)).target_fpr == 0.1
