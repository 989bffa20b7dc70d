"""Type-I attacks, checked against torchattacks and Foolbox on the same models and inputs.

Models: a small CNN trained for ~1 s on scikit-learn's digits (where decision boundaries must
be meaningful: DeepFool) and a randomly initialised ResNet-20 on random CIFAR-sized inputs
(where only the arithmetic is compared: FGSM, BIM, PGD).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
from safetynet.models import build_model

torchattacks = pytest.importorskip("torchattacks")
fb = pytest.importorskip("foolbox")


class TinyCNN(nn.Module):
    """Digits classifier of our own (independent of safetynet.models), ReLU so DeepFool's linearisation is exact per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.3) / 0.37))


@pytest.fixture(scope="module")
def digits():
    from safetynet.data import load_digits

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train, test = load_digits("train"), load_digits("test")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = train.images, train.labels
    for _ in range(150):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = test.images[:64], test.labels[:64]
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.9, f"test model too weak to test attacks on ({acc:.2f})"
    return model, xt, yt


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    model = build_model("resnet20").eval()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # Our gradient attacks run convolutions in channels-last layout (twice as fast on CPU). A
    # random-init ResNet on noise has near-zero input gradients whose sign can differ between
    # convolution kernels at 1e-7 and then cascade over BIM steps, so the reference gets the same
    # layout: both run identical kernels and any remaining difference is the algorithm's.
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model "gets right", so the loss has a clean gradient
    return model, x, y


# --- cross-checks against torchattacks ---------------------------------------------------------

@pytest.mark.parametrize("fixture", ["resnet", "digits"])
def test_fgsm_matches_torchattacks(fixture, request):
    model, x, y = request.getfixturevalue(fixture)
    ours = FGSM()(model, x, y, eps=8 / 255).clipped
    ref = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("fixture", ["resnet", "digits"])
def test_bim_and_pgd_without_random_start_match_torchattacks(fixture, request):
    model, x, y = request.getfixturevalue(fixture)
    eps, alpha, steps = 8 / 255, 2 / 255, 5
    ref = torchattacks.BIM(model, eps=eps, alpha=alpha, steps=steps)(x, y)
    torch.testing.assert_close(BIM(steps=steps, step_size=alpha)(model, x, y, eps=eps).clipped, ref, atol=1e-5, rtol=0)
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = PGD(steps=steps, step_size=alpha, random_start=False)(model, x, y, eps=eps).clipped
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_bim_default_schedule_is_kurakins_rule_as_in_torchattacks(resnet):
    model, x, y = resnet
    eps = 4 / 255  # torchattacks' steps=0 means min(eps*255 + 4, 1.25*eps*255) = 5 iterations
    ref = torchattacks.BIM(model, eps=eps, alpha=1 / 255, steps=0)
    assert ref.steps == 5
    torch.testing.assert_close(BIM()(model, x, y, eps=eps).clipped, ref(x, y), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", [BIML2, PGDL2])
def test_l2_iterative_matches_torchattacks_pgdl2_without_random_start(cls, resnet):
    model, x, y = resnet
    kwargs = {"random_start": False} if cls is PGDL2 else {}
    ours = cls(steps=5, step_size=0.1, **kwargs)(model, x, y, eps=0.3).clipped
    # torchattacks' PGDL2 uses .view() on the gradient, which needs the default layout.
    ref = torchattacks.PGDL2(model, eps=0.3, alpha=0.1, steps=5, random_start=False)(x.contiguous(), y)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_targeted_pgd_and_fgsm_match_torchattacks(digits):
    model, x, y = digits
    targets = (y + 3) % 10
    ref = torchattacks.PGD(model, eps=0.2, alpha=0.05, steps=8, random_start=False)
    ref.set_mode_targeted_by_function(lambda images, labels: targets, quiet=True)
    ours = PGD(steps=8, step_size=0.05, random_start=False)(model, x, TargetedMisclassification(targets), eps=0.2)
    torch.testing.assert_close(ours.clipped, ref(x, y), atol=1e-5, rtol=0)
    ref = torchattacks.FGSM(model, eps=0.1)
    ref.set_mode_targeted_by_function(lambda images, labels: targets, quiet=True)
    ours = FGSM()(model, x, TargetedMisclassification(targets), eps=0.1)
    torch.testing.assert_close(ours.clipped, ref(x, y), atol=1e-5, rtol=0)


# --- DeepFool against Foolbox (and torchattacks) ------------------------------------------------

def _summary(model, x, y, adv):
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
        correct = model(x).argmax(1) == y
    l2 = (adv - x).flatten(1).norm(dim=1)
    return fooled.float().mean().item(), l2[fooled & correct].median().item()


def test_deepfool_matches_foolbox_success_and_median_l2(digits):
    model, x, y = digits
    _, adv, success = DeepFool(steps=50, overshoot=0.02)(model, x, y)
    ours = _summary(model, x, y, adv)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, fb_adv, fb_success = fb.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02)(fmodel, x, y, epsilons=None)
    ref = _summary(model, x, y, fb_adv)
    assert ours[0] >= 0.95 and ref[0] >= 0.95
    assert abs(ours[0] - ref[0]) <= 0.1 * ref[0]
    assert abs(ours[1] - ref[1]) <= 0.1 * ref[1], (ours, ref)
    assert torch.equal(success, fb_success)


def test_deepfool_no_worse_than_torchattacks(digits):
    model, x, y = digits
    x, y = x[:16], y[:16]
    adv = DeepFool()(model, x, y).clipped
    ref = torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)
    with torch.no_grad():
        ours_ok, theirs_ok = model(adv).argmax(1) != y, model(ref).argmax(1) != y
    assert ours_ok.float().mean() >= theirs_ok.float().mean()
    # torchattacks applies the overshoot per step and often stalls at the boundary, so its
    # successes are the easy images: compare norms on images both attacks fooled.
    both = ours_ok & theirs_ok
    assert both.sum() >= 4
    l2_ours, l2_theirs = (adv - x).flatten(1).norm(dim=1)[both], (ref - x).flatten(1).norm(dim=1)[both]
    assert l2_ours.median() <= 1.1 * l2_theirs.median(), (l2_ours, l2_theirs)


def test_deepfool_batch_equals_one_sample_at_a_time(digits):
    """Batching (and dropping finished samples) must not couple the samples."""
    model, x, y = digits
    x, y = x[:12], y[:12]
    batched = DeepFool()(model, x, y).raw
    single = torch.cat([DeepFool()(model, x[i:i + 1], y[i:i + 1]).raw for i in range(len(x))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_deepfool_targeted_hits_targets(digits):
    model, x, y = digits
    targets = (y + 1 + torch.arange(len(y)) % 9) % 10
    _, adv, success = DeepFool()(model, x, TargetedMisclassification(targets))
    with torch.no_grad():
        pred = model(adv).argmax(1)
    assert torch.equal(success, pred == targets)
    assert success.float().mean() >= 0.95


def test_deepfool_top_k_leaves_the_clean_top_k(digits):
    model, x, y = digits
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
def test_budget_bounds_and_success_are_honest(attack, norm, epsilons, digits):
    model, x, y = digits
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


def test_single_eps_returns_unstacked_and_large_budgets_succeed(digits):
    model, x, y = digits
    _, adv, success = PGD(steps=10, seed=0)(model, x, y, eps=0.3)
    assert adv.shape == x.shape and success.shape == (len(x),)
    assert success.float().mean() > 0.9


def test_pgd_random_start_is_seeded(digits):
    model, x, y = digits
    a = PGD(steps=2, seed=3)(model, x, y, eps=0.1).clipped
    b = PGD(steps=2, seed=3)(model, x, y, eps=0.1).clipped
    c = PGD(steps=2, seed=4)(model, x, y, eps=0.1).clipped
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("attack", [FGSM, BIM, BIML2, PGD, PGDL2, DeepFool])
def test_mask_leaves_masked_out_channels_bit_identical(attack, resnet):
    model, x, y = resnet
    mask = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)  # only the last channel (SceneProof: depth)
    eps = None if attack is DeepFool else (8 / 255 if attack in (FGSM, BIM, PGD) else 0.5)
    kwargs = {} if attack in (FGSM, DeepFool) else {"steps": 3}
    raw, adv, _ = attack(mask=mask, **kwargs)(model, x, y, eps=eps)
    # the attack itself respects the mask (raw), not only the final clipping
    assert torch.equal(raw[:, :2], x[:, :2]) and torch.equal(adv[:, :2], x[:, :2])
    assert not torch.equal(adv[:, 2], x[:, 2])


def test_model_mode_is_eval_during_attack_and_restored(resnet):
    model, x, y = resnet
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


def test_criteria_combine_with_and(digits):
    model, x, y = digits
    crit = Misclassification(y) & FirstHalf(len(y))
    assert isinstance(crit, And)
    plain = DeepFool()(model, x, y)
    combined = DeepFool()(model, x, crit)
    assert torch.equal(combined.success, plain.success & FirstHalf(len(y)).keep)
    # the class part drives DeepFool; the second half never satisfies the criterion, so it runs to the cap
    assert combined.success[len(y) // 2:].sum() == 0


def test_labels_tensor_is_shorthand_for_misclassification(digits):
    model, x, y = digits
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


def test_criterion_without_classes_is_refused_by_class_attacks(digits):
    model, x, _ = digits
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
def test_bad_images_raise_input_error(bad, match, digits):
    model, x, y = digits
    with pytest.raises(InputError, match=match):
        FGSM()(model, bad(x), y, eps=0.1)


@pytest.mark.parametrize("eps,match", [(-0.1, ">= 0"), (float("nan"), "finite"), ([], "empty"), (None, "needs eps"),
                                       ("0.1", "finite number"), (True, "finite number")])
def test_bad_eps_raise_input_error(eps, match, digits):
    model, x, y = digits
    with pytest.raises(InputError, match=match):
        PGD(steps=1)(model, x, y, eps=eps)


def test_bad_labels_and_hyperparameters(digits):
    model, x, y = digits
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


def test_warning_free(digits):
    model, x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeepFool(steps=3)(model, x[:4], y[:4])
        PGD(steps=2, seed=0)(model, x[:4], y[:4], eps=[0.1, 0.2])


def test_fewer_deepfool_candidates_keep_quality(digits):
    model, x, y = digits
    full = DeepFool(candidates=None)(model, x, y)
    few = DeepFool(candidates=2)(model, x, y)
    assert few.success.float().mean() >= full.success.float().mean() - 0.05
    l2_full, l2_few = distances(x, full.clipped)["l2"], distances(x, few.clipped)["l2"]
    both = full.success & few.success
    assert l2_few[both].median() <= 1.1 * l2_full[both].median()
    with pytest.raises(InputError, match="candidates"):
        DeepFool(candidates=0)


README_EXAMPLE = '''
import torch
from safetynet.attacks import PGD, DeepFool, TopKMisclassification
from safetynet.models import build_model

model = build_model("resnet20").eval()  # or safetynet.models.pretrained("cifar10-resnet20")
images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])  # images in [0, 1]
raw, adv, success = PGD(steps=10, seed=0)(model, images, labels, eps=8 / 255)
raw, adv, success = DeepFool()(model, images, TopKMisclassification(labels, k=5))  # "DeepFool-5"
print(success.float().mean().item())
'''


def test_readme_example_runs(capsys):
    exec(compile(README_EXAMPLE, "README_EXAMPLE", "exec"), {})  # noqa: S102 - our own snippet, not user input
    assert 0.0 <= float(capsys.readouterr().out) <= 1.0
