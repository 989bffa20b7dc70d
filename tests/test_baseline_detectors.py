"""The benchmark's published baselines: Mahalanobis (Lee et al. 2018), LID (Ma et al. 2018), KD+BU (Feinman et al. 2017).

Each is checked against an independent computation of its characteristics (numpy ``pinv`` and
scikit-learn's ``EmpiricalCovariance`` for the Mahalanobis scores, a numpy/scipy transcription of
the LID estimator and a toy set of known intrinsic dimension, scikit-learn's ``KernelDensity`` and
a numpy MC-dropout variance for KD+BU), and used as a :class:`Defence` calibrated at 5 % FPR.
The classifier is a SmallCNN trained for ~1 s on scikit-learn's digits, the adversarials BIM-L∞.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

from safetynet.attacks import BIM
from safetynet.attacks.detector_scores import TorchScore, as_detector_score
from safetynet.data import load_digits
from safetynet.detectors.kd_bu import KDBUDetector, head_inputs
from safetynet.detectors.lid import LIDDetector, lid_mle
from safetynet.detectors.mahalanobis import MahalanobisDetector
from safetynet.errors import CheckpointError, InputError
from safetynet.evaluation.defence import Defence
from safetynet.metrics import roc_auc
from safetynet.models import build_model
from safetynet.taps import extract_activations


@pytest.fixture(scope="module")
def setup():
    """(model, natural fit images, their labels, BIM adversarials of them, test images, test adversarials)."""
    torch.set_num_threads(1)
    tr, te = load_digits("train"), load_digits("test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("smallcnn")
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        idx = torch.randint(0, len(tr.labels), (128,), generator=gen)
        loss = F.cross_entropy(model(tr.images[idx]), tr.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    x, y = tr.images[:400], tr.labels[:400]
    _, xa, ok = BIM(steps=10, step_size=0.025)(model, x, y, eps=0.1)
    xt, yt = te.images[:120], te.labels[:120]
    _, xta, okt = BIM(steps=10, step_size=0.025)(model, xt, yt, eps=0.1)
    return model, x, y, xa[ok], xt, xta[okt]


# --------------------------------------------------------------------------- Mahalanobis


def _numpy_mahalanobis(model, layer, x_ref, y_ref, x_query):
    """Lee et al.'s per-layer score from scratch: spatial means, class means, pooled covariance, pinv."""
    _, a = extract_activations(model, x_ref, layer, flatten=False)
    f = a[layer].double().numpy().mean(axis=(2, 3))
    y = y_ref.numpy()
    means = np.stack([f[y == c].mean(0) for c in range(10)])
    centred = f - means[y]
    precision = np.linalg.pinv(centred.T @ centred / len(f))
    _, aq = extract_activations(model, x_query, layer, flatten=False)
    fq = aq[layer].double().numpy().mean(axis=(2, 3))
    d = np.stack([np.einsum("nc,cd,nd->n", fq - m, precision, fq - m) for m in means], 1)
    return d.min(1), means, precision


def test_mahalanobis_layer_scores_equal_numpy_pinv_of_the_tied_covariance(setup):
    from sklearn.covariance import EmpiricalCovariance

    model, x, y, xa, xt, _ = setup
    det = MahalanobisDetector(model, layers=["relu1", "relu2"], noise=0.0).fit(x, xa, natural_labels=y)
    ref = det.reference_index_
    ours = det.layer_scores(xt)
    for j, layer in enumerate(["relu1", "relu2"]):
        want, means, precision = _numpy_mahalanobis(model, layer, x[ref], y[ref], xt)
        np.testing.assert_allclose(ours[:, j], want, rtol=1e-6)
        np.testing.assert_allclose(det.means_[layer].numpy(), means, rtol=1e-10)
        # The authors' code: EmpiricalCovariance on the class-centred features.
        _, a = extract_activations(model, x[ref], layer, flatten=False)
        f = a[layer].double().numpy().mean(axis=(2, 3))
        emp = EmpiricalCovariance(assume_centered=False).fit(f - means[y[ref].numpy()])
        np.testing.assert_allclose(det.precision_[layer].numpy(), emp.precision_, rtol=1e-6, atol=1e-8)
    assert ours[:, 1].std() > 0


def test_mahalanobis_preprocessing_matches_an_independent_gradient_step(setup):
    model, x, y, xa, xt, _ = setup
    noise = 0.02
    det = MahalanobisDetector(model, layers=["relu2"], noise=noise).fit(x, xa, natural_labels=y)
    ref = det.reference_index_
    _, means, precision = _numpy_mahalanobis(model, "relu2", x[ref], y[ref], xt[:2])
    mu, p = torch.from_numpy(means), torch.from_numpy(precision)

    def dist(xq):  # (N, K), an independent torch transcription
        feats = {}
        h = model.get_submodule("relu2").register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
        model(xq)
        h.remove()
        diff = feats["f"].double().mean((2, 3))[:, None] - mu[None]
        return ((diff @ p) * diff).sum(-1)

    xq = xt.clone().requires_grad_(True)
    d = dist(xq)
    d.gather(1, d.argmin(1, keepdim=True)).sum().backward()
    xp = (xt - noise * xq.grad.sign()).clamp(0, 1)
    want, _, _ = _numpy_mahalanobis(model, "relu2", x[ref], y[ref], xp)
    np.testing.assert_allclose(det.layer_scores(xt)[:, 0], want, rtol=1e-6)
    # The point of the pre-processing: natural images move closer to their class.
    before, _, _ = _numpy_mahalanobis(model, "relu2", x[ref], y[ref], xt)
    assert (want < before).mean() > 0.9


# --------------------------------------------------------------------------- LID


def _numpy_lid(queries, reference, k, exclude_self=False):
    """Ma et al.'s mle_batch: sorted distances, then -k / sum(log(r_i / r_k))."""
    d = np.sort(cdist(queries, reference), axis=1)
    d = d[:, 1:k + 1] if exclude_self else d[:, :k]
    return -k / np.sum(np.log(d / d[:, -1:]), axis=1)


def test_lid_estimator_equals_a_numpy_transcription_of_the_formula():
    rng = np.random.default_rng(0)
    ref, q = rng.normal(size=(100, 30)), rng.normal(size=(40, 30))
    got = lid_mle(torch.from_numpy(q), torch.from_numpy(ref), 20).numpy()
    np.testing.assert_allclose(got, _numpy_lid(q, ref, 20), rtol=1e-8)
    got = lid_mle(torch.from_numpy(ref), torch.from_numpy(ref), 20, exclude_self=True).numpy()
    np.testing.assert_allclose(got, _numpy_lid(ref, ref, 20, exclude_self=True), rtol=1e-6)


@pytest.mark.parametrize("d", [2, 5, 10])
def test_lid_recovers_the_dimension_of_a_cube_embedded_in_50_dimensions(d):
    g = torch.Generator().manual_seed(d)
    basis, _ = torch.linalg.qr(torch.randn(50, d, generator=g, dtype=torch.float64))  # orthonormal (50, d)
    ref = torch.rand(2000, d, generator=g, dtype=torch.float64) @ basis.T
    interior = (0.25 + 0.5 * torch.rand(200, d, generator=g, dtype=torch.float64)) @ basis.T  # away from the faces
    est = lid_mle(interior, ref, 20).mean().item()
    assert abs(est - d) <= 0.15 * d, est


def test_lid_detector_characteristics_use_the_fixed_reference_minibatch(setup):
    model, x, y, xa, xt, _ = setup
    det = LIDDetector(model, layers=["relu2", "fc1"], k=10, reference_size=80).fit(x, xa)
    ref = x[det.reference_index_]
    assert len(ref) == 80
    got = det.characteristics(xt[:30])
    for j, layer in enumerate(["relu2", "fc1"]):
        _, a = extract_activations(model, ref, layer)
        _, q = extract_activations(model, xt[:30], layer)
        np.testing.assert_allclose(got[:, j], _numpy_lid(q[layer].double().numpy(), a[layer].double().numpy(), 10), rtol=1e-6)


# --------------------------------------------------------------------------- KD+BU


def test_kernel_density_equals_sklearn_and_uncertainty_equals_numpy(setup):
    from sklearn.neighbors import KernelDensity

    model, x, y, xa, xt, _ = setup
    det = KDBUDetector(model, bandwidth=1.5, dropout=0.3, mc_samples=20).fit(x, xa, natural_labels=y)
    with torch.no_grad():
        logits, z = head_inputs(model, model.fc2, xt)
    pred = logits.argmax(1)
    ours = det.characteristics(xt)
    zn, predn = z.double().numpy(), pred.numpy()
    want_kd = np.empty(len(xt))
    for c in np.unique(predn):
        feats = det.class_features_[int(c)].numpy()
        kde = KernelDensity(kernel="gaussian", bandwidth=1.5).fit(feats)
        want_kd[predn == c] = kde.score_samples(zn[predn == c])
    np.testing.assert_allclose(ours[:, 0], want_kd, rtol=1e-7)
    # BU: the authors' var(axis=0).mean(axis=1) over T dropout passes of softmax(head(m_t * z / (1 - p))).
    w, b = model.fc2.weight.double().numpy(), model.fc2.bias.double().numpy()
    masks = det.masks_.numpy()
    assert abs(masks.mean() - 0.7) < 0.1  # keep probability 1 - p
    out = np.stack([zn * m / 0.7 @ w.T + b for m in masks])  # (T, N, K)
    prob = np.exp(out - out.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    np.testing.assert_allclose(ours[:, 1], prob.var(axis=0).mean(axis=1), rtol=1e-7)
    # The class features are exactly the natural reference images of that class.
    ref = det.reference_index_
    assert sum(len(v) for v in det.class_features_.values()) == len(ref)


def test_kdbu_refuses_a_model_without_linear_head():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    with pytest.raises(InputError, match="nn.Linear"):
        KDBUDetector(model).fit(torch.rand(10, 1, 8, 8), torch.rand(10, 1, 8, 8))


# --------------------------------------------------------------------------- the common contract


DETECTORS = {
    "mahalanobis": lambda m: MahalanobisDetector(m, noise=0.005),
    "lid": lambda m: LIDDetector(m, k=10, reference_size=100),
    "kdbu": lambda m: KDBUDetector(m, bandwidth=1.0, mc_samples=20),
}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_baseline_is_a_defence_calibrated_at_5_percent_fpr(name, setup, tmp_path):
    model, x, y, xa, xt, xta = setup
    fit_part, cal = x[:300], x[300:]
    det = DETECTORS[name](model).fit(fit_part, xa)
    s_nat, s_adv = det.decision_function(xt), det.decision_function(xta)
    assert roc_auc(s_nat, s_adv) > 0.75  # BIM on digits is visible to each of them
    d = Defence(name, model, det).calibrate(cal, 0.05)
    s_cal = det.decision_function(cal)
    assert d.threshold == np.sort(s_cal)[::-1][5]  # the 6th largest of 100 natural scores: 5 % above it
    assert d.detect(cal).mean() == 0.05
    np.testing.assert_array_equal(d.detect(xta), s_adv > d.threshold)
    # The differentiable score (what adaptive attacks descend) is the deployed one, with a gradient.
    xg = xt[:5].clone().requires_grad_(True)
    score = as_detector_score(det)
    assert isinstance(score, TorchScore)
    logits, s = score(xg)
    np.testing.assert_allclose(s[:, 0].detach().numpy(), s_nat[:5], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(logits, model(xt[:5]))
    s.sum().backward()
    assert xg.grad.abs().sum() > 0
    # Save and load without pickle: same scores; another classifier is refused.
    det.save(tmp_path / name)
    again = type(det).load(tmp_path / name, model)
    np.testing.assert_allclose(again.decision_function(xt), s_nat, rtol=1e-10)
    other = build_model("smallcnn")
    with pytest.raises(CheckpointError, match="another classifier"):
        type(det).load(tmp_path / name, other)


def test_unfitted_and_bad_settings_fail_with_one_line_messages(setup):
    model, x, _, xa, xt, _ = setup
    with pytest.raises(InputError, match="not fitted yet"):
        LIDDetector(model).decision_function(xt)
    with pytest.raises(InputError, match="k=30 must be smaller"):
        LIDDetector(model, k=30, reference_size=20).fit(x, xa)
    with pytest.raises(InputError, match="noise must be"):
        MahalanobisDetector(model, noise=-1.0).fit(x, xa)
    with pytest.raises(InputError, match="dropout must be"):
        KDBUDetector(model, dropout=1.0).fit(x, xa)
    with pytest.raises(InputError, match="no layer named"):
        MahalanobisDetector(model, layers=["nope"]).fit(x, xa)
