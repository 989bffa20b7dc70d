"""The paper's smoothed type-II attack and the Undetected criterion, on a small digits model.

References are independent of the code under test: SafetyNet's own ``decision_function`` (the
integer kernel) and ``smooth_forward`` (a separate float32 implementation), and success
recomputed by hand from the classifier and ``SafetyNet.detect``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safetynet.attacks import BIM, Misclassification
from safetynet.attacks.adaptive import (
    BPDAScore,
    JointPGD,
    MetzenScore,
    SmoothedTypeII,
    SmoothScore,
    Undetected,
    sweep,
)
from safetynet.attacks.detector_scores import DetectorScore, as_detector_score
from safetynet.attacks.joint_pgd import classifier_loss
from safetynet.errors import InputError


@pytest.fixture(scope="module")
def digits(digits_protected):
    return digits_protected


def type2_success_by_hand(net, x_adv, y):
    """Misclassified by the classifier and not rejected by SafetyNet's own (hard) detect()."""
    with torch.no_grad():
        wrong = net.model(x_adv).argmax(1) != y
    return wrong & ~torch.from_numpy(net.detect(x_adv))


# -- surrogates against the real detector ---------------------------------------------------------
def test_hard_score_equals_deployed_detector(digits):
    """BPDAScore's forward (hard codes, float64 RBF) is the integer-kernel detector to rounding."""
    x = torch.cat([digits["xt"][:20], digits["xa"][:20]])
    for net in (digits["net"], digits["ens"]):
        _, s = BPDAScore(net, backward="zero")(x)
        per_layer = net.scores(x)
        for i, layer in enumerate(net.layers):
            np.testing.assert_allclose(s[:, i].detach().numpy(), per_layer[layer], rtol=0, atol=1e-9)


def test_smooth_score_matches_safetynet_smooth_forward(digits):
    """Our per-layer smoothing, combined by max, equals SafetyNet.smooth_forward (a float32 implementation)."""
    x = torch.cat([digits["xt"][:10], digits["xa"][:10]])
    for lam, gs in ((1.0, 1.0), (10.0, 0.1), (100.0, 0.01)):
        logits, s = SmoothScore(digits["ens"], lam, gs)(x)
        ref_logits, ref = digits["ens"].smooth_forward(x, sharpness=lam, gamma_scale=gs)
        torch.testing.assert_close(logits, ref_logits)
        np.testing.assert_allclose(s.amax(1).detach().numpy(), ref.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_smooth_score_tends_to_the_real_score(digits):
    net = digits["net"]
    x = torch.cat([digits["xt"][:20], digits["xa"][:20]])
    _, s = SmoothScore(net, sharpness=1e8, gamma_scale=1.0)(x)
    close = np.abs(s[:, 0].detach().numpy() - net.decision_function(x)) < 1e-3
    assert close.mean() >= 0.9  # a unit sitting exactly on a threshold may still differ


def test_smooth_gradient_is_nonzero(digits):
    x = digits["xt"][:16].clone().requires_grad_(True)
    _, s = SmoothScore(digits["net"], 10.0, 0.1)(x)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert (g.flatten(1).norm(dim=1) > 1e-12).float().mean() > 0.9



def test_a_detector_can_provide_its_own_surrogate():
    """Any object with a callable detector_score(sharpness, gamma_scale) is asked for its surrogate."""

    class Score(DetectorScore):
        model = torch.nn.Identity()

        def forward(self, x):
            return x, x[:, 0]

    class Defence:
        def __init__(self, score):
            self.score, self.asked = score, []

        def detector_score(self, sharpness, gamma_scale):
            self.asked.append((sharpness, gamma_scale))
            return self.score

    score = Score()
    defence = Defence(score)
    assert as_detector_score(defence, sharpness=3.0, gamma_scale=0.5) is score
    assert defence.asked == [(3.0, 0.5)]
    assert SmoothedTypeII(defence, sharpness=2.0, gamma_scale=0.25).score is score
    with pytest.raises(InputError, match="no differentiable surrogate"):
        as_detector_score(type("NotCallable", (), {"detector_score": 1.0})())


def test_classifier_loss_by_hand():
    z = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    # untargeted CW: z_y - max_{j != y} z_j, clamped at -kappa
    torch.testing.assert_close(classifier_loss(z, y, False, "cw"), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(classifier_loss(z, y, False, "cw", kappa=5.0), torch.tensor([1.0, -3.0]))
    # targeted towards class 2: max_{j != t} z_j - z_t
    torch.testing.assert_close(classifier_loss(z, torch.tensor([2, 2]), True, "cw", kappa=10.0), torch.tensor([3.0, 2.0]))
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(classifier_loss(z, y, False, "ce"), -ce)


# -- the criterion ---------------------------------------------------------------------------------
def test_undetected_uses_the_real_detector(digits):
    from safetynet.detectors.ensemble import DetectorEnsemble

    x = torch.cat([digits["xt"][:30], digits["xa"][:30]])
    for net in (digits["net"], digits["ens"]):
        ok = Undetected(net)(x, net.model(x))
        np.testing.assert_array_equal(ok.numpy(), ~net.detect(x))
    goal = Misclassification(torch.cat([digits["yt"][:30], digits["y"][:30]])) & Undetected(digits["net"])
    assert goal.loss_classes() is not None  # the class part still drives gradient attacks
    with pytest.raises(InputError, match="SafetyNet"):
        Undetected(DetectorEnsemble(digits["net"].detectors_))
    with pytest.raises(InputError, match="detect"):
        Undetected(object())


def test_undetected_with_metzen(digits):
    from safetynet.attacks.adaptive import MetzenAdapter
    from safetynet.detectors.metzen import MetzenDetector

    det = MetzenDetector(digits["model"], layer="relu2", epochs=2, widths=(16, 16, 16), seed=0)
    det.fit(digits["x"][:200], digits["xa"][:100])
    x = torch.cat([digits["xt"][:20], digits["xa"][:20]])
    ok = Undetected(det)(x, det.model(x))
    np.testing.assert_array_equal(ok.numpy(), ~(det.decision_function(x) > 0))
    assert isinstance(Undetected(det).detector, MetzenAdapter)
    # the Metzen surrogate is its exact logit
    _, s = MetzenScore(det)(x)
    np.testing.assert_allclose(s[:, 0].detach().numpy(), det.decision_function(x), rtol=1e-5, atol=1e-5)


# -- the attack ------------------------------------------------------------------------------------
def test_type2_beats_type1_at_the_same_budget(digits):
    """The adaptive attack fools SafetyNet far more often than BIM does with the same L∞ budget."""
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(net)
    eps = 0.2
    _, adv1, ok1 = BIM(steps=20, step_size=2.5 * eps / 20)(net.model, xt, goal, eps=eps)
    _, adv2, ok2 = SmoothedTypeII(net, sharpness=1.0, gamma_scale=1.0, steps=30)(net.model, xt, goal, eps=eps)
    # success is what the real system says, recomputed independently
    torch.testing.assert_close(ok1, type2_success_by_hand(net, adv1, yt))
    torch.testing.assert_close(ok2, type2_success_by_hand(net, adv2, yt))
    assert (adv2 - xt).abs().amax() <= eps + 1e-6 and adv2.min() >= 0 and adv2.max() <= 1
    # BIM misclassifies most images but SafetyNet rejects them; the type-II attack gets through
    with torch.no_grad():
        assert (net.model(adv1).argmax(1) != yt).float().mean() > 0.8
    assert ok1.float().mean() < 0.35
    assert ok2.float().mean() > ok1.float().mean() + 0.3


def test_type2_l2_budget(digits):
    net, xt, yt = digits["net"], digits["xt"][:30], digits["yt"][:30]
    goal = Misclassification(yt) & Undetected(net)
    res = SmoothedTypeII(net, distance="l2", steps=20)(net.model, xt, goal, eps=[0.5, 1.5])
    assert res.success.shape == (2, 30)
    norms = (res.clipped - xt).flatten(2).norm(dim=2)
    assert (norms[0] <= 0.5 + 1e-5).all() and (norms[1] <= 1.5 + 1e-5).all()
    assert res.success[1].float().mean() >= res.success[0].float().mean()
    torch.testing.assert_close(res.success[1], type2_success_by_hand(net, res.clipped[1], yt))


def test_success_is_rechecked_with_the_real_detector(digits, monkeypatch):
    """A lying surrogate ("every image is natural") cannot make the attack report false successes."""
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]

    def lying_forward(self, x):
        from safetynet.taps import forward_with_taps

        logits, _ = forward_with_taps(self.model, x, self.net.layers)
        return logits, torch.full((len(x), len(self.net.layers)), -100.0, dtype=torch.float64)

    monkeypatch.setattr(SmoothScore, "forward", lying_forward)
    goal = Misclassification(yt) & Undetected(net)
    _, s_lie = SmoothScore(net)(xt[:4])
    assert (s_lie < 0).all()  # the surrogate now claims every image is natural
    _, adv, ok = SmoothedTypeII(net, steps=20, early_stop=False)(net.model, xt, goal, eps=0.2)
    with torch.no_grad():
        fooled = net.model(adv).argmax(1) != yt
    assert fooled.float().mean() > 0.8  # the classifier part worked...
    torch.testing.assert_close(ok, type2_success_by_hand(net, adv, yt))  # ...but the real detector decides
    assert ok.float().mean() < fooled.float().mean() - 0.3


def test_early_stop_keeps_a_success(digits):
    """With early stopping each image keeps its first successful iterate, so success can only grow."""
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(net)
    a = SmoothedTypeII(net, steps=20, early_stop=True)(net.model, xt, goal, eps=0.2).success
    b = SmoothedTypeII(net, steps=20, early_stop=False)(net.model, xt, goal, eps=0.2).success
    assert a.float().mean() >= b.float().mean()


def test_sweep_reports_every_setting_and_keeps_the_union(digits):
    net, xt, yt = digits["net"], digits["xt"][:30], digits["yt"][:30]
    goal = Misclassification(yt) & Undetected(net)
    res = sweep(net, net.model, xt, goal, eps=[0.1, 0.2], sharpness=(1.0, 100.0), gamma_scale=(1.0, 0.1), steps=10)
    assert [(s["sharpness"], s["gamma_scale"]) for s in res.settings] == [(1.0, 1.0), (1.0, 0.1), (100.0, 1.0), (100.0, 0.1)]
    union = torch.stack(res.per_setting_success).any(0)
    torch.testing.assert_close(res.best.success, union)
    for k, eps in enumerate((0.1, 0.2)):
        torch.testing.assert_close(res.best.success[k], type2_success_by_hand(net, res.best.clipped[k], yt))
        assert (res.best.clipped[k] - xt).abs().amax() <= eps + 1e-6
        for s, ok in zip(res.settings, res.per_setting_success):
            assert s["success_rate"][k] == pytest.approx(float(ok[k].float().mean()))


def test_classifier_only_engine_matches_misclassification(digits):
    model, xt, yt = digits["model"], digits["xt"], digits["yt"]
    _, adv, ok = JointPGD(None, steps=20)(model, xt, yt, eps=0.2)
    with torch.no_grad():
        torch.testing.assert_close(ok, model(adv).argmax(1) != yt)
    assert ok.float().mean() > 0.8


def test_bad_arguments(digits):
    net = digits["net"]
    with pytest.raises(InputError, match="distance"):
        SmoothedTypeII(net, distance="l1")
    with pytest.raises(InputError, match="c must"):
        SmoothedTypeII(net, c=-1.0)
    with pytest.raises(InputError, match="gamma_scale"):
        SmoothedTypeII(net, gamma_scale=0.0)
    with pytest.raises(InputError, match="combine"):
        SmoothedTypeII(net, combine="mean")
    with pytest.raises(InputError, match="surrogate"):
        SmoothedTypeII(object())
    with pytest.raises(TypeError):
        SmoothedTypeII(net, stepz=10)
    with pytest.raises(InputError, match="names classes"):
        SmoothedTypeII(net, steps=2)(net.model, digits["xt"][:4], Undetected(net), eps=0.1)
    with pytest.raises(InputError, match="sweep needs"):
        sweep(net, net.model, digits["xt"][:4], digits["yt"][:4], eps=0.1, sharpness=())
