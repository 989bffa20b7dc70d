"""Adaptive and black-box attacks on the detector: BPDA, orthogonal PGD, code matching, HopSkipJump, transfer.

References: hand-built hard quantizers with autograd's own (zero) derivative, the smoothed
quantizer's autograd gradient for the sigmoid backward, a brute-force nearest-code search, a
counting wrapper around the model for HopSkipJump's queries (the comparison with Foolbox's
HopSkipJump is in test_peers.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from safetynet.attacks import BIM, FGSM, Misclassification
from safetynet.attacks.adaptive import (
    BPDA,
    BPDAScore,
    CodeMatching,
    DropExtraClass,
    ExtraClassDetector,
    ExtraClassScore,
    HopSkipJump,
    OrthogonalPGD,
    TransferAttack,
    Undetected,
    combined_labels,
    orthogonalize,
    quantize,
    rbf_score_torch,
)
from safetynet.errors import InputError


@pytest.fixture(scope="module")
def digits(digits_protected):
    return digits_protected


@pytest.fixture(scope="module")
def metzen(digits):
    from safetynet.detectors.metzen import MetzenDetector

    return MetzenDetector(digits["model"], layer="relu2", epochs=5, widths=(32, 32, 32), seed=0).fit(
        digits["x"], digits["xa"])


def by_hand(model, detect, x_adv, y):
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    return wrong & ~torch.as_tensor(np.asarray(detect(x_adv)))


# -- BPDA ------------------------------------------------------------------------------------------
def test_plain_backprop_through_the_hard_quantizer_is_exactly_zero_and_bpda_is_not(digits):
    from safetynet.codes import pool_activation
    from safetynet.taps import forward_with_taps

    net = digits["net"]
    layer = net.layers[0]
    det = net.detectors_[layer]
    t = torch.as_tensor(net.quantizers_[layer].thresholds_[0])
    x = digits["xt"][:32].clone().requires_grad_(True)
    _, acts = forward_with_taps(net.model, x, [layer])
    a = pool_activation(acts[layer], net.pool)
    # independent hard quantizer: sign(a - t) clipped at 0 is 1 exactly where a > t, and autograd
    # differentiates it (sign has derivative 0)
    hard = (a - t).sign().clamp(min=0)
    np.testing.assert_array_equal(hard.detach().numpy(), net.quantizers_[layer].transform(a.detach()))
    (g_plain,) = torch.autograd.grad(rbf_score_torch(hard, det).sum(), x)
    assert torch.count_nonzero(g_plain) == 0
    for backward in ("zero", "identity", "sigmoid"):
        xb = x.detach().clone().requires_grad_(True)
        _, s = BPDAScore(net, backward=backward)(xb)
        np.testing.assert_allclose(s[:, 0].detach().numpy(), net.decision_function(xb.detach()), atol=1e-9)
        (g,) = torch.autograd.grad(s.sum(), xb)
        if backward == "zero":
            assert torch.count_nonzero(g) == 0
        else:
            assert (g.flatten(1).norm(dim=1) > 1e-12).float().mean() > 0.9, backward


def test_quantize_forward_and_sigmoid_backward(digits):
    q = digits["net"].quantizers_["relu2"]
    from safetynet.codes import layer_activations

    a = layer_activations(digits["model"], digits["xt"][:20], ["relu2"], pool=4)["relu2"]
    a = (a + 0.01 * torch.randn_like(a)).requires_grad_(True)  # off the ReLU's zero, where both are smooth
    codes = quantize(a, q.thresholds_, "sigmoid", sharpness=7.0)
    np.testing.assert_array_equal(codes.detach().numpy(), q.transform(a.detach()))
    w = torch.randn_like(a)
    (g_bpda,) = torch.autograd.grad((w * codes).sum(), a)
    (g_ref,) = torch.autograd.grad((w * q.smooth(a, 7.0)).sum(), a)  # autograd of the sigmoid smoothing
    torch.testing.assert_close(g_bpda, g_ref, rtol=1e-5, atol=1e-6)
    (g_id,) = torch.autograd.grad((w * quantize(a, q.thresholds_, "identity")).sum(), a)
    torch.testing.assert_close(g_id, w)
    with pytest.raises(InputError, match="backward"):
        quantize(a, q.thresholds_, "straight")
    with pytest.raises(InputError, match="thresholds"):
        quantize(a, q.thresholds_[:, :5], "identity")


def test_bpda_beats_type1_and_handles_an_ensemble(digits):
    for net in (digits["net"], digits["ens"]):
        xt, yt = digits["xt"], digits["yt"]
        goal = Misclassification(yt) & Undetected(net)
        _, _, ok1 = BIM(steps=20, step_size=0.025)(net.model, xt, goal, eps=0.2)
        _, adv2, ok2 = BPDA(net, steps=30)(net.model, xt, goal, eps=0.2)
        torch.testing.assert_close(ok2, by_hand(net.model, net.detect, adv2, yt))
        assert ok2.float().mean() > ok1.float().mean() + 0.3
    with pytest.raises(InputError, match="identity"):
        BPDA(digits["net"], backward="zero")


def test_bpda_and_opgd_on_a_calibrated_safetynet_aim_at_its_threshold(digits):
    """A Defence calibrated at threshold t: BPDA/OPGD go straight through the same quantizer, shifted by t.

    At t = 0 the calibrated detector is the bare SafetyNet, so the attacks must be identical image for
    image; at another t, success is judged by score <= t (re-checked by hand).
    """
    from safetynet.attacks.adaptive import OrthogonalPGD
    from safetynet.evaluation.defence import CalibratedDetector, Defence

    net, xt, yt = digits["ens"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(net)
    for attack in (BPDA, OrthogonalPGD):
        _, bare, ok_bare = attack(net, steps=10)(net.model, xt, goal, eps=0.2)
        shifted = CalibratedDetector(net, 0.0)
        _, same, ok_same = attack(shifted, steps=10)(net.model, xt, Misclassification(yt) & Undetected(shifted), eps=0.2)
        assert torch.equal(same, bare) and torch.equal(ok_same, ok_bare), attack.__name__
    d = Defence("det_ens", net.model, net).calibrate(digits["x"][:200], fpr=0.05)
    assert d.threshold != 0.0
    _, adv, ok = BPDA(d.target, steps=10)(net.model, xt, d.criterion(yt), eps=0.2)
    by_threshold = lambda x: net.decision_function(x) > d.threshold  # noqa: E731
    torch.testing.assert_close(ok, by_hand(net.model, by_threshold, adv, yt))


# -- orthogonal PGD ------------------------------------------------------------------------------------
def test_orthogonalize():
    g = torch.randn(5, 1, 4, 4)
    h = torch.randn(5, 1, 4, 4)
    o = orthogonalize(g, h)
    torch.testing.assert_close((o * h).flatten(1).sum(1), torch.zeros(5), atol=1e-5, rtol=0)
    # g = its component along h + o
    coef = (g * h).flatten(1).sum(1) / (h * h).flatten(1).sum(1)
    torch.testing.assert_close(o + coef.view(-1, 1, 1, 1) * h, g, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(orthogonalize(g, torch.zeros_like(h)), g)


def test_opgd_lowers_the_detector_score_and_keeps_the_misclassification(digits, metzen):
    model, xt, yt = digits["model"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(metzen)
    eps = 0.2
    _, adv1, _ = BIM(steps=20, step_size=0.025)(model, xt, Misclassification(yt), eps=eps)
    _, adv2, ok2 = OrthogonalPGD(metzen, steps=40)(model, xt, goal, eps=eps)
    with torch.no_grad():
        wrong1 = model(adv1).argmax(1) != yt
        wrong2 = model(adv2).argmax(1) != yt
    s1, s2 = metzen.decision_function(adv1), metzen.decision_function(adv2)
    assert wrong2.float().mean() >= 0.8 * wrong1.float().mean()  # still misclassified
    both = (wrong1 & wrong2).numpy()
    # but no longer suspicious: early stopping leaves them just below the detector's threshold
    assert (s2[both] < 0).mean() > 0.8 and (s1[both] > 0).mean() > 0.6
    assert s2[both].mean() < s1[both].mean() - 0.5
    torch.testing.assert_close(ok2, by_hand(model, lambda a: metzen.decision_function(a) > 0, adv2, yt))
    type1 = by_hand(model, lambda a: metzen.decision_function(a) > 0, adv1, yt)
    assert ok2.float().mean() > type1.float().mean() + 0.3


@pytest.mark.parametrize("mode,surrogate", [("orthogonal", "bpda"), ("selective", "bpda"), ("orthogonal", "smooth")])
def test_opgd_against_safetynet(digits, mode, surrogate):
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(net)
    _, adv, ok = OrthogonalPGD(net, mode=mode, surrogate=surrogate, steps=30)(net.model, xt, goal, eps=0.2)
    torch.testing.assert_close(ok, by_hand(net.model, net.detect, adv, yt))
    assert ok.float().mean() > 0.5


# -- code matching ---------------------------------------------------------------------------------------
def test_code_matching_anchors_are_the_nearest_accepted_codes_of_the_target(digits):
    net, x, y = digits["net"], digits["x"], digits["y"]
    xt = digits["xt"][:20]
    attack = CodeMatching(net, x, y)
    targets = torch.arange(20) % 10
    anchor, has = attack._anchors(xt, targets)
    bank = attack._build_bank()
    assert has.all()
    # brute force: Hamming distance to every accepted, correctly classified bank image of the target class
    out = net.classify(x)
    keep = ((out.logits.argmax(1) == y) & ~torch.from_numpy(out.detected)).numpy()
    codes_bank = net.codes(x)["relu2"][keep].astype(int)
    labels_bank = y.numpy()[keep]
    own = net.codes(xt)["relu2"].astype(int)
    for i in range(20):
        members = np.flatnonzero(labels_bank == int(targets[i]))
        d = ((codes_bank[members] - own[i]) ** 2).sum(1)
        assert ((bank["codes"]["relu2"][anchor[i]].numpy().astype(int) - own[i]) ** 2).sum() == d.min()
        assert int(bank["labels"][anchor[i]]) == int(targets[i])


def test_code_matching_is_a_type2_attack(digits):
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]
    goal = Misclassification(yt) & Undetected(net)
    _, _, ok1 = BIM(steps=20, step_size=0.025)(net.model, xt, goal, eps=0.2)
    for anchor in ("nearest", "most_natural"):
        _, adv, ok = CodeMatching(net, digits["x"], digits["y"], anchor=anchor, steps=30)(net.model, xt, goal, eps=0.2)
        torch.testing.assert_close(ok, by_hand(net.model, net.detect, adv, yt))
        assert ok.float().mean() > ok1.float().mean() + 0.2, anchor
    with pytest.raises(InputError, match="own classifier"):
        CodeMatching(net, digits["x"], digits["y"], steps=2)(DropExtraClass(net.model), xt[:4], yt[:4], eps=0.1)


# -- HopSkipJump ----------------------------------------------------------------------------------------
class Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0
        self.train(model.training)

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


def test_hopskipjump_counts_queries_and_respects_the_budget(digits):
    model = Counting(digits["model"])
    xt, yt = digits["xt"][:20], digits["yt"][:20]
    attack = HopSkipJump(max_queries=300, steps=50, seed=0)
    _, adv, ok = attack(model, xt, Misclassification(yt))
    q = attack.queries_
    assert q.shape == (20,) and (q <= 300).all() and (q > 0).all()
    # every row the model saw is a counted query, apart from the base class's one-image
    # probe of the output size and its final success check on the N results
    assert model.rows == int(q.sum()) + 1 + 20
    with torch.no_grad():
        torch.testing.assert_close(ok, digits["model"](adv).argmax(1) != yt)
    assert ok.all()  # unbounded: every image ends on the adversarial side
    small = HopSkipJump(max_queries=40, steps=50, seed=0)
    small(digits["model"], xt, Misclassification(yt))
    assert (small.queries_ <= 40).all()


def test_hopskipjump_on_the_defended_output(digits):
    net, xt, yt = digits["net"], digits["xt"][:20], digits["yt"][:20]
    goal = Misclassification(yt) & Undetected(net)
    attack = HopSkipJump(max_queries=400, steps=20, seed=0)
    res = attack(net.model, xt, goal, eps=[0.5, 1.0, 8.0])
    for k in range(3):
        torch.testing.assert_close(res.success[k], by_hand(net.model, net.detect, res.clipped[k], yt))
    assert res.success[2].float().mean() > 0.8
    assert (res.success[0].float().mean() <= res.success[1].float().mean() <= res.success[2].float().mean())
    labels = combined_labels(net.model, net, res.clipped[2])
    torch.testing.assert_close(labels != yt, labels.ne(yt))  # shape/dtype sanity
    assert ((labels == 10) == torch.from_numpy(net.detect(res.clipped[2]))).all()  # "rejected" is label K


# -- masks (SceneProof's depth-only attacks use the same engines) ----------------------------------------
def test_adaptive_attacks_change_only_the_masked_pixels(digits):
    """``raw`` (run()'s own output, before the base class re-applies the mask) must already leave
    the masked-out pixels bit-identical, and the attacks must still succeed inside the mask."""
    from safetynet.attacks.adaptive import SmoothedTypeII

    net, xt, yt = digits["net"], digits["xt"][:40], digits["yt"][:40]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:7] = 1  # the middle of the digit
    goal = Misclassification(yt) & Undetected(net)
    attacks = {
        "smoothed": (SmoothedTypeII(net, steps=20, mask=mask, random_start=True, seed=0), 0.4),
        "bpda": (BPDA(net, steps=20, mask=mask), 0.4),
        "opgd": (OrthogonalPGD(net, steps=20, mask=mask), 0.4),
        "code-matching": (CodeMatching(net, digits["x"], digits["y"], steps=20, mask=mask), 0.4),
        "hsja-l2": (HopSkipJump(max_queries=600, steps=20, seed=0, mask=mask), 4.0),
        "hsja-linf": (HopSkipJump(distance="linf", max_queries=600, steps=20, seed=0, mask=mask), 0.6),
    }
    outside = ~mask.bool().expand_as(xt)
    for name, (attack, eps) in attacks.items():
        raw, adv, ok = attack(net.model, xt, goal, eps=eps)
        assert torch.equal(raw[outside], xt[outside]), name
        assert torch.equal(adv[outside], xt[outside]), name
        torch.testing.assert_close(ok, by_hand(net.model, net.detect, adv, yt))
        assert ok.float().mean() > 0.3, (name, ok.float().mean())
    with pytest.raises(InputError, match="one mask for all images"):
        HopSkipJump(max_queries=10, mask=torch.ones(2, 1, 8, 8))(net.model, xt[:2], Misclassification(yt[:2]))


# -- transfer ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def surrogate(tmp_path_factory):
    from safetynet.evaluation.surrogates import train_surrogate

    model, metrics = train_surrogate("smallcnn", 7, dataset="digits", out=tmp_path_factory.mktemp("surrogate"), epochs=4)
    assert metrics["test_acc"] > 0.9
    return model


def test_transfer_replays_surrogate_adversarials(digits, surrogate):
    net, xt, yt = digits["net"], digits["xt"], digits["yt"]
    eps = 0.2
    bim = BIM(steps=10, step_size=0.05)
    _, adv, ok = TransferAttack(surrogate, bim)(net.model, xt, Misclassification(yt) & Undetected(net), eps=eps)
    _, direct, _ = bim(surrogate, xt, yt, eps=eps)
    torch.testing.assert_close(adv, direct)  # exactly the surrogate's adversarials...
    torch.testing.assert_close(ok, by_hand(net.model, net.detect, adv, yt))  # ...judged on the target
    with torch.no_grad():
        assert (net.model(adv).argmax(1) != yt).float().mean() > 0.3  # they do transfer to the classifier


def test_finetune_with_adversarial_class(digits, surrogate):
    from safetynet.evaluation.surrogates import (
        craft_adversarials,
        finetune_with_adversarial_class,
    )

    x, y = digits["x"], digits["y"]
    before = {k: v.clone() for k, v in surrogate.state_dict().items()}
    adv, ok = craft_adversarials(surrogate, x, y, 0.1)
    ft = finetune_with_adversarial_class(surrogate, x, y, adv[ok], epochs=3, seed=0)
    for k, v in surrogate.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the surrogate itself is untouched
    xt, yt = digits["xt"], digits["yt"]
    with torch.no_grad():
        assert ft(xt).shape == (60, 11)
        assert (DropExtraClass(ft)(xt).argmax(1) == yt).float().mean() > 0.85
    det = ExtraClassDetector(ft)
    adv_t, ok_t = craft_adversarials(surrogate, xt, yt, 0.1)
    assert det.detect(adv_t[ok_t]).mean() > 0.5 and det.detect(xt).mean() < 0.2
    _, s = ExtraClassScore(ft)(xt)
    np.testing.assert_allclose(s[:, 0].detach().numpy(), det.decision_function(xt), rtol=1e-5, atol=1e-5)
    # "Finetune TF": a type-II attack on the fine-tuned surrogate, replayed on SafetyNet
    from safetynet.attacks.adaptive import SmoothedTypeII

    tf = TransferAttack(DropExtraClass(ft), SmoothedTypeII(det, steps=20), surrogate_detector=det)
    _, adv2, ok2 = tf(digits["net"].model, xt, Misclassification(yt) & Undetected(digits["net"]), eps=0.2)
    torch.testing.assert_close(ok2, by_hand(digits["net"].model, digits["net"].detect, adv2, yt))
    with pytest.raises(InputError):
        TransferAttack(surrogate, FGSM)  # the class, not an instance


def test_adaptive_attacks_reachable_from_safetynet_attacks():
    """One namespace for every attack: the type-II / adaptive ones resolve lazily to the same objects."""
    import safetynet.attacks as attacks
    from safetynet.attacks import adaptive

    for name in ("BPDA", "CodeMatching", "HopSkipJump", "JointPGD", "OrthogonalPGD", "SmoothedTypeII",
                 "TransferAttack", "Undetected", "sweep"):
        assert getattr(attacks, name) is getattr(adaptive, name)
        assert name in dir(attacks)
    with pytest.raises(AttributeError):
        attacks.NoSuchAttack  # noqa: B018
