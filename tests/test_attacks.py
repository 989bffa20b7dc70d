"""Type-I attacks: the contract every attack keeps, checked by re-running the model on its output.

Clip-and-recheck, the ``(raw, clipped, success)`` result, budgets, criteria, masks and bad input.
No peer library is needed here: the cross-checks against torchattacks, Foolbox and ART are in
test_peers.py. Models (conftest): ``tiny_digits``, a small CNN trained for ~1 s on scikit-learn's
digits (meaningful decision boundaries: DeepFool), and ``random_resnet``, a randomly initialised
ResNet-20 on random CIFAR-sized inputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from safetynet.attacks import (
    BIM,
    BIML2,
    FGSM,
    PGD,
    PGDL2,
    And,
    Criterion,
    DeepFool,
    Misclassification,
    TargetedMisclassification,
    TopKMisclassification,
    distances,
    make_attack,
)
from safetynet.errors import InputError


# --- DeepFool: batching, targets, top-k -------------------------------------------------------------

def test_deepfool_batch_equals_one_sample_at_a_time(tiny_digits):
    """Batching (and dropping finished samples) must not couple the samples."""
    model, x, y = tiny_digits
    x, y = x[:12], y[:12]
    batched = DeepFool()(model, x, y).raw
    single = torch.cat([DeepFool()(model, x[i:i + 1], y[i:i + 1]).raw for i in range(len(x))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_deepfool_targeted_hits_targets(tiny_digits):
    model, x, y = tiny_digits
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10
    _, adv, success = DeepFool()(model, x, TargetedMisclassification(targets))
    with torch.no_grad():
        pred = model(adv).argmax(1)
    assert torch.equal(success, pred == targets)
    assert success.float().mean() >= 0.95


def test_deepfool_top_k_leaves_the_clean_top_k(tiny_digits):
    model, x, y = tiny_digits
    with torch.no_grad():
        clean_top3 = model(x).topk(3, dim=1).indices
    _, adv, success = DeepFool()(model, x, TopKMisclassification(y, k=3))
    with torch.no_grad():
        pred = model(adv).argmax(1)
    outside = (pred[:, None] != clean_top3).all(1) & (pred != y)
    assert torch.equal(success, outside)
    assert success.float().mean() >= 0.9
    # Leaving the top 3 takes a larger change than leaving the label (the paper's DeepFool-5 remark).
    top1 = DeepFool()(model, x, y)
    both = success & top1.success
    assert distances(x, adv)["l2"][both].median() > distances(x, top1.clipped)["l2"][both].median()


# --- contract: budgets, bounds, success ---------------------------------------------------------

ATTACKS = [
    (FGSM(), "linf", [0.0, 0.05, 0.1]),
    (BIM(steps=4, step_size=0.03), "linf", [0.05, 0.1]),
    (PGD(steps=4, seed=0), "linf", [0.05, 0.1]),
    (BIML2(steps=4), "l2", [0.5, 1.0]),
    (PGDL2(steps=4, seed=0), "l2", [0.5, 1.0]),
    (DeepFool(), "l2", [0.5, 1.0]),
]


@pytest.mark.parametrize("attack,norm,epsilons", ATTACKS, ids=lambda a: type(a).__name__ if not isinstance(a, (str, list)) else "")
def test_budget_bounds_and_success_are_honest(attack, norm, epsilons, tiny_digits):
    model, x, y = tiny_digits
    raw, adv, success = attack(model, x, y, eps=epsilons)
    assert raw.shape == adv.shape == (len(epsilons), *x.shape)
    assert success.shape == (len(epsilons), len(x)) and success.dtype == torch.bool
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        for i, eps in enumerate(epsilons):
            assert (distances(x, adv[i])[norm] <= eps + 1e-6).all()
            assert torch.equal(success[i], model(adv[i]).argmax(1) != y)
    if epsilons[0] == 0.0:
        assert torch.equal(adv[0], x)


def test_single_eps_returns_unstacked_and_large_budgets_succeed(tiny_digits):
    model, x, y = tiny_digits
    _, adv, success = PGD(steps=10, seed=0)(model, x, y, eps=0.3)
    assert adv.shape == x.shape and success.shape == (len(x),)
    assert success.float().mean() > 0.9


def test_pgd_random_start_is_seeded(tiny_digits):
    model, x, y = tiny_digits
    a = PGD(steps=2, seed=3)(model, x, y, eps=0.1).clipped
    b = PGD(steps=2, seed=3)(model, x, y, eps=0.1).clipped
    c = PGD(steps=2, seed=4)(model, x, y, eps=0.1).clipped
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("attack", [FGSM, BIM, BIML2, PGD, PGDL2, DeepFool])
def test_mask_leaves_masked_out_channels_bit_identical(attack, random_resnet):
    model, x, y = random_resnet
    mask = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)  # only the last channel (SceneProof: depth)
    eps = None if attack is DeepFool else (8 / 255 if attack in (FGSM, BIM, PGD) else 0.5)
    kwargs = {} if attack in (FGSM, DeepFool) else {"steps": 3}
    raw, adv, _ = attack(mask=mask, **kwargs)(model, x, y, eps=eps)
    # the attack itself respects the mask (raw), not only the final clipping
    assert torch.equal(raw[:, :2], x[:, :2]) and torch.equal(adv[:, :2], x[:, :2])
    assert not torch.equal(adv[:, 2], x[:, 2])


def test_model_mode_is_eval_during_attack_and_restored(random_resnet):
    model, x, y = random_resnet
    modes = []
    handle = model.register_forward_pre_hook(lambda m, inp: modes.append(m.training))
    try:
        model.train()
        PGD(steps=2, seed=0)(model, x, y, eps=0.01)
        assert model.training and modes and not any(modes)
        model.eval()
        DeepFool(steps=2)(model, x, y)
        assert not model.training
    finally:
        handle.remove()
        model.eval()


# --- criteria -------------------------------------------------------------------------------------

class FirstHalf(Criterion):
    """A criterion that names no class: accepts only samples in the first half of the batch."""

    def __init__(self, n: int) -> None:
        self.keep = torch.arange(n) < n // 2

    def __call__(self, x_adv, logits):
        return self.keep

    def subset(self, index):
        new = FirstHalf(0)
        new.keep = self.keep[index]
        return new


def test_criteria_combine_with_and(tiny_digits):
    model, x, y = tiny_digits
    crit = Misclassification(y) & FirstHalf(len(y))
    assert isinstance(crit, And)
    plain = DeepFool()(model, x, y)
    combined = DeepFool()(model, x, crit)
    assert torch.equal(combined.success, plain.success & FirstHalf(len(y)).keep)
    # the class part drives DeepFool; the second half never satisfies the criterion, so it runs to the cap
    assert combined.success[len(y) // 2:].sum() == 0


def test_labels_tensor_is_shorthand_for_misclassification(tiny_digits):
    model, x, y = tiny_digits
    a = FGSM()(model, x, y, eps=0.1)
    b = FGSM()(model, x, Misclassification(y), eps=0.1)
    assert torch.equal(a.clipped, b.clipped) and torch.equal(a.success, b.success)


def test_topk_criterion_needs_clean_logits():
    crit = TopKMisclassification(torch.tensor([0, 1]), k=2)
    with pytest.raises(InputError, match="clean top-k"):
        crit(torch.zeros(2, 1, 8, 8), torch.zeros(2, 10))
    bound = TopKMisclassification(torch.tensor([0, 1]), k=2, clean_logits=torch.arange(20.0).view(2, 10))
    # clean top-2 is {9, 8} for both rows; the label is excluded too
    logits = torch.zeros(2, 10)
    logits[0, 7] = 1  # row 0 -> class 7: outside {0, 8, 9}
    logits[1, 8] = 1  # row 1 -> class 8: inside
    assert bound(None, logits).tolist() == [True, False]


def test_criterion_without_classes_is_refused_by_class_attacks(tiny_digits):
    model, x, _ = tiny_digits
    with pytest.raises(InputError, match="names classes"):
        PGD(steps=1)(model, x, FirstHalf(len(x)), eps=0.1)
    with pytest.raises(InputError, match="names classes"):
        DeepFool()(model, x, FirstHalf(len(x)))


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,match", [
    (lambda x: x.clone().fill_(float("nan")), "NaN"),
    (lambda x: x[0], r"\(N, C, H, W\)"),
    (lambda x: x * 2, r"\[0, 1\]"),
    (lambda x: x.double(), "dtype"),
    (lambda x: (x * 255).to(torch.uint8), "float"),
    (lambda x: x[:0], "empty"),
    (lambda x: x.numpy(), "torch.Tensor"),
])
def test_bad_images_raise_input_error(bad, match, tiny_digits):
    model, x, y = tiny_digits
    with pytest.raises(InputError, match=match):
        FGSM()(model, bad(x), y, eps=0.1)


@pytest.mark.parametrize("eps,match", [(-0.1, ">= 0"), (float("nan"), "finite"), ([], "empty"), (None, "needs eps"),
                                       ("0.1", "finite number"), (True, "finite number")])
def test_bad_eps_raise_input_error(eps, match, tiny_digits):
    model, x, y = tiny_digits
    with pytest.raises(InputError, match=match):
        PGD(steps=1)(model, x, y, eps=eps)


def test_bad_labels_and_hyperparameters(tiny_digits):
    model, x, y = tiny_digits
    with pytest.raises(InputError, match="labels"):
        FGSM()(model, x, y[:-1], eps=0.1)
    with pytest.raises(InputError, match="integer"):
        FGSM()(model, x, y.float(), eps=0.1)
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        FGSM()(model, x, y + 10, eps=0.1)
    with pytest.raises(InputError, match="k=10"):
        DeepFool()(model, x, TopKMisclassification(y, k=10))
    with pytest.raises(TypeError, match="iters"):
        PGD(iters=10)  # torchattacks' README typo must fail loudly
    with pytest.raises(TypeError):
        PGD(10)  # hyperparameters are keyword-only
    with pytest.raises(TypeError):
        FGSM()(model, x, y, 0.1)  # so is eps
    with pytest.raises(InputError, match="steps"):
        BIM(steps=0)
    with pytest.raises(InputError, match="step_size"):
        PGD(step_size=-1.0)
    with pytest.raises(InputError, match="overshoot"):
        DeepFool(overshoot=-0.1)
    with pytest.raises(InputError, match="0 \\(keep\\) and 1"):
        PGD(mask=torch.full((1, 1, 1, 1), 0.5))
    with pytest.raises(InputError, match="broadcast"):
        PGD(mask=torch.ones(1, 3, 1, 1))(model, x, y, eps=0.1)
    with pytest.raises(InputError, match="nn.Module"):
        FGSM()(lambda t: t, x, y, eps=0.1)
    with pytest.raises(InputError, match="unknown attack"):
        make_attack("cw")
    with pytest.raises(InputError, match="overshoot"):
        make_attack("pgd", overshoot=0.1)


def test_warning_free(tiny_digits):
    model, x, y = tiny_digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeepFool(steps=3)(model, x[:4], y[:4])
        PGD(steps=2, seed=0)(model, x[:4], y[:4], eps=[0.1, 0.2])


def test_fewer_deepfool_candidates_keep_quality(tiny_digits):
    model, x, y = tiny_digits
    full = DeepFool(candidates=None)(model, x, y)
    few = DeepFool(candidates=2)(model, x, y)
    assert few.success.float().mean() >= full.success.float().mean() - 0.05
    l2_full, l2_few = distances(x, full.clipped)["l2"], distances(x, few.clipped)["l2"]
    both = full.success & few.success
    assert l2_few[both].median() <= 1.1 * l2_full[both].median()
    with pytest.raises(InputError, match="candidates"):
        DeepFool(candidates=0)
