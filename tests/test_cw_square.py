"""CW-L2 (Carlini & Wagner 2017) and Square (Andriushchenko et al. 2020) against torchattacks and Foolbox.

* CW at one fixed c (one binary-search round) is torchattacks' ``CW``: equal success, median L2
  within 10 % (measured: equal to 1e-6 on the shipped ResNet-20); with the binary search it is
  Foolbox's ``L2CarliniWagnerAttack`` (the authors' algorithm), same check.
* Square with ``shared_squares=True`` draws its windows as torchattacks' ``Square`` does from the
  same seed: the adversarials must be identical and the query counts equal (ours count the clean
  check too: +1). The default per-image draws (the paper's Algorithm 1) are compared on success
  and median queries.
"""

from __future__ import annotations

import pytest
import torch

from conftest import require_module
from safetynet.attacks import ATTACKS, CWL2, Misclassification, Square, distances, make_attack
from safetynet.attacks.square import p_schedule
from safetynet.errors import InputError


@pytest.fixture(scope="module")
def torchattacks():
    return require_module("torchattacks", install="pip install --no-deps torchattacks")


@pytest.fixture(scope="module")
def resnet_sample():
    """The shipped ResNet-20 and 8 embedded CIFAR-10 sample images it classifies correctly."""
    from safetynet.data import load_dataset
    from safetynet.models import pretrained

    torch.set_num_threads(1)
    model = pretrained("cifar10-resnet20").eval().requires_grad_(False)
    data = load_dataset("cifar10-sample", "test")
    x, y = data.images_u8[:16].float() / 255, data.labels[:16]
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:8].contiguous(), y[ok][:8]


def _fooled_l2(model, x, y, adv):
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    return fooled, distances(x, adv)["l2"]


# --------------------------------------------------------------------------- CW-L2


def test_cw_at_one_c_matches_torchattacks_success_and_median_l2(resnet_sample, torchattacks):
    model, x, y = resnet_sample
    res = CWL2(steps=60, binary_search_steps=1, initial_c=1.0, lr=0.01)(model, x, y)
    ref = torchattacks.CW(model, c=1.0, kappa=0, steps=60, lr=0.01)(x, y)
    ours_ok, ours_l2 = _fooled_l2(model, x, y, res.clipped)
    ref_ok, ref_l2 = _fooled_l2(model, x, y, ref)
    assert torch.equal(res.success, ours_ok)
    assert torch.equal(ours_ok, ref_ok) and ours_ok.sum() >= 4
    mo, mr = ours_l2[ours_ok].median().item(), ref_l2[ref_ok].median().item()
    assert abs(mo - mr) <= 0.1 * mr, (mo, mr)


def test_cw_binary_search_matches_foolbox(tiny_digits):
    fb = require_module("foolbox")
    model, x, y = tiny_digits
    x, y = x[:16], y[:16]
    res = CWL2(steps=100, binary_search_steps=4, initial_c=1e-2)(model, x, y)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, adv, ok = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=4, steps=100, stepsize=0.01,
                                                  initial_const=1e-2)(fmodel, x, y, epsilons=None)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert torch.equal(res.success & correct, ok & correct) and (ok & correct).sum() >= 12
    mo = distances(x, res.clipped)["l2"][res.success & correct].median().item()
    mf = distances(x, adv)["l2"][ok & correct].median().item()
    assert abs(mo - mf) <= 0.1 * mf, (mo, mf)
    # The search shrinks the perturbation: more rounds never give a larger median L2 than one round at c=1e-2 x 10^k.
    one = CWL2(steps=100, binary_search_steps=1, initial_c=1.0)(model, x, y)
    assert mo <= distances(x, one.clipped)["l2"][one.success & correct].median().item()


def test_cw_clips_to_eps_and_keeps_masked_pixels(tiny_digits):
    model, x, y = tiny_digits
    x, y = x[:8], y[:8]
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    res = CWL2(steps=30, binary_search_steps=2, initial_c=1.0, mask=mask)(model, x, y, eps=[0.5, 2.0])
    assert res.success.shape == (2, 8)
    assert (distances(x, res.clipped[0])["l2"] <= 0.5 + 1e-5).all()
    assert torch.equal(res.clipped[1][..., 4:], x[..., 4:])


# --------------------------------------------------------------------------- Square


def test_square_shared_draws_equal_torchattacks_images_and_query_counts(resnet_sample, torchattacks):
    model, x, y = resnet_sample
    attack = Square(n_queries=150, shared_squares=True, seed=3)
    res = attack(model, x, y, eps=8 / 255)
    ref = torchattacks.Square(model, eps=8 / 255, n_queries=150, seed=3)
    torch.manual_seed(3)  # torchattacks' perturb() seeds the global RNG, then calls this
    ref.init_hyperparam(x)
    ref_queries, ref_adv = ref.attack_single_run(x, y)
    assert torch.equal(res.clipped, ref_adv)
    assert torch.equal(attack.queries_, ref_queries.long() + 1)  # + our clean check
    assert 0 < res.success.sum() < len(x)  # some fooled, some not: both branches compared
    for budget in (150, 1000, 10000):
        ref = torchattacks.Square(model, n_queries=budget, p_init=0.8)
        assert [p_schedule(i, 0.8, budget) for i in range(budget)] == [ref.p_selection(i) for i in range(budget)]


def test_square_per_image_draws_are_the_same_algorithm_as_torchattacks(resnet_sample, torchattacks):
    model, x, y = resnet_sample
    ours = Square(n_queries=200, seed=0)
    res = ours(model, x, y, eps=8 / 255)
    ref = torchattacks.Square(model, eps=8 / 255, n_queries=200, seed=0)
    torch.manual_seed(0)
    ref.init_hyperparam(x)
    ref_queries, ref_adv = ref.attack_single_run(x, y)
    ref_ok, _ = _fooled_l2(model, x, y, ref_adv)
    assert abs(int(res.success.sum()) - int(ref_ok.sum())) <= 2
    both = res.success & ref_ok
    assert both.any()
    mo, mr = ours.queries_[both].float().median().item(), ref_queries[both].median().item()
    assert mr / 3 <= mo <= 3 * mr, (mo, mr)
    assert (distances(x, res.clipped)["linf"] <= 8 / 255 + 1e-6).all()


def test_square_query_budget_and_schedule(tiny_digits):
    model, x, y = tiny_digits
    attack = Square(n_queries=20, seed=0)
    res = attack(model, x[:16], y[:16], eps=0.02)
    assert attack.queries_.max() <= 1 + 1 + 20  # clean check, stripes, 20 iterations
    assert (attack.queries_[~res.success] == 22).all()
    # The paper's schedule for 10k queries: p_init up to iteration 10, halved at 10, 50, 200, ..., 8000.
    assert [p_schedule(i, 0.8, 10000) for i in (0, 10, 11, 50, 51, 201, 8001)] == [0.8, 0.8, 0.4, 0.4, 0.2, 0.1, 0.8 / 512]
    assert p_schedule(11, 0.8, 1000) == 0.8 / 4  # rescaled: iteration 11 of 1000 is 110 of 10000
    with pytest.raises(InputError, match="needs eps"):
        Square()(model, x[:2], Misclassification(y[:2]))
    with pytest.raises(InputError, match="p_init"):
        Square(p_init=2.0)


def test_registered_by_name():
    assert ATTACKS["cw-l2"] is CWL2 and ATTACKS["square"] is Square
    assert isinstance(make_attack("square", n_queries=10), Square)
    with pytest.raises(InputError, match="does not take"):
        make_attack("cw-l2", eps=1.0)
