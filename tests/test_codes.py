"""Activation quantization (paper sec. 2.1): thresholds, code levels, smoothing, extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from safetynet.codes import (ActivationQuantizer, CodeExtractor, activations_and_logits, extract_codes,
                             layer_activations, pool_activation)
from safetynet.errors import InputError
from safetynet.models import build_model
from safetynet.taps import extract_activations


def relu_like(n: int = 500, d: int = 40, seed: int = 0) -> np.ndarray:
    """ReLU outputs: about half exactly zero, so quantiles tie at 0 for many units."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, d)) + rng.normal(size=d), 0).astype(np.float32)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, in_channels=1, mean=[0.5], std=[0.5]).eval()


# -- thresholds -----------------------------------------------------------------------------------
def test_binary_thresholds_are_per_unit_medians():
    a = relu_like()
    q = ActivationQuantizer(levels=2).fit(a)
    assert q.thresholds_.shape == (1, a.shape[1]) and q.thresholds_.dtype == np.float32
    np.testing.assert_allclose(q.thresholds_[0], np.median(a, axis=0), rtol=1e-6, atol=1e-7)


def test_quaternary_thresholds_are_quartiles():
    a = relu_like(seed=1)
    q = ActivationQuantizer(levels=4).fit(torch.from_numpy(a))  # tensors accepted too
    np.testing.assert_allclose(q.thresholds_, np.quantile(a, [0.25, 0.5, 0.75], axis=0), rtol=1e-6, atol=1e-7)
    assert np.all(np.diff(q.thresholds_, axis=0) >= 0)


def test_custom_quantiles_and_fixed_thresholds():
    a = relu_like(seed=2)
    q = ActivationQuantizer(levels=2, quantiles=[0.9]).fit(a)
    np.testing.assert_allclose(q.thresholds_[0], np.quantile(a, 0.9, axis=0), rtol=1e-6)
    q0 = ActivationQuantizer(levels=2, thresholds=0.0).fit(a)
    assert np.all(q0.thresholds_ == 0)
    np.testing.assert_array_equal(q0.transform(a), (a > 0).astype(np.uint8))  # "is the ReLU active"


def test_conv_activations_are_flattened():
    a = np.abs(np.random.default_rng(0).normal(size=(30, 4, 3, 3))).astype(np.float32)
    q = ActivationQuantizer().fit(a)
    assert q.n_features_in_ == 36
    np.testing.assert_array_equal(q.transform(a), q.transform(a.reshape(30, -1)))


# -- hard codes -----------------------------------------------------------------------------------
def test_code_levels_on_hand_made_activations():
    q = ActivationQuantizer(levels=4, thresholds=[1.0, 2.0, 3.0]).fit(np.zeros((1, 6)))
    a = np.array([[0.0, 1.0, 1.5, 2.0, 3.0, 3.5]], dtype=np.float32)
    # strict rule code = #{k: a > t_k}: values equal to a threshold stay below it
    np.testing.assert_array_equal(q.transform(a), [[0, 0, 1, 1, 2, 3]])
    assert q.transform(a).dtype == np.uint8
    b = ActivationQuantizer(levels=2, thresholds=0.5).fit(np.zeros((1, 3)))
    np.testing.assert_array_equal(b.transform([[0.0, 0.5, 0.51]]), [[0, 0, 1]])


def test_ties_at_zero_keep_inactive_units_at_level_zero():
    a = np.zeros((10, 3), np.float32)
    a[:4, 0] = [0.1, 1.0, 2.0, 3.0]  # unit 0: quartiles 0, 0 and 0.1 + 0.75 * 0.9 = 0.775
    q = ActivationQuantizer(levels=4).fit(a)
    np.testing.assert_allclose(q.thresholds_[:, 0], [0.0, 0.0, 0.775], rtol=1e-6)
    codes = q.transform(a)
    assert codes[4:].max() == 0 and codes[:, 1:].max() == 0  # zeros never exceed a zero threshold
    np.testing.assert_array_equal(codes[:4, 0], [2, 3, 3, 3])  # level 1 is unused (tied thresholds)


def test_transform_torch_matches_numpy():
    a = relu_like(seed=3)
    q = ActivationQuantizer(levels=4).fit(a)
    np.testing.assert_array_equal(q.transform_torch(torch.from_numpy(a)).numpy(), q.transform(a))


def test_codes_span_all_levels_on_natural_data():
    a = np.exp(np.random.default_rng(4).normal(size=(2000, 30)))  # no ties: quartiles split units into 4 bins
    codes = ActivationQuantizer(levels=4).fit_transform(a)
    frac = np.bincount(codes.ravel(), minlength=4) / codes.size
    np.testing.assert_allclose(frac, 0.25, atol=0.01)


# -- smooth codes -----------------------------------------------------------------------------------
def test_smooth_tends_to_hard_codes_as_sharpness_grows():
    a = torch.from_numpy(relu_like(seed=5))
    for levels in (2, 4):
        q = ActivationQuantizer(levels=levels).fit(a)
        hard = torch.from_numpy(q.transform(a)).float()
        errs = [(q.smooth(a, lam) - hard).abs().mean().item() for lam in (1.0, 1e2, 1e4, 1e6)]
        assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
        gaps = (a[:, None, :] - torch.from_numpy(q.thresholds_)[None]).abs()
        lam = 100.0 / float(gaps[gaps > 0].min()) ** 2  # past every gap, including ties at 0
        assert (q.smooth(a, lam) - hard).abs().max().item() < 1e-3


def test_smooth_is_differentiable_and_tie_goes_to_zero():
    q = ActivationQuantizer(levels=2, thresholds=0.0).fit(np.zeros((1, 2)))
    a = torch.tensor([[0.0, 0.3]], requires_grad=True)
    s = q.smooth(a, 1e4)
    assert s[0, 0].item() < 1e-6 and s[0, 1].item() > 1 - 1e-6  # a == t -> level 0, like transform
    a2 = torch.tensor([[0.01, 0.02]], requires_grad=True)
    q.smooth(a2, 1e2).sum().backward()
    assert torch.all(a2.grad > 0)


# -- state and errors -------------------------------------------------------------------------------
def test_from_thresholds_round_trip():
    a = relu_like(seed=6)
    q = ActivationQuantizer(levels=4).fit(a)
    state = q.get_state()
    q2 = ActivationQuantizer.from_thresholds(state["thresholds"], state["levels"])
    np.testing.assert_array_equal(q2.transform(a), q.transform(a))


@pytest.mark.parametrize("kwargs", [{"levels": 1}, {"levels": 2.5}, {"levels": 300}, {"levels": 4, "thresholds": 0.5},
                                    {"levels": 4, "thresholds": [2.0, 1.0, 3.0]}, {"quantiles": [1.5]},
                                    {"levels": 4, "quantiles": [0.5, 0.25, 0.75]}, {"thresholds": "median"}])
def test_bad_quantizer_settings_raise(kwargs):
    with pytest.raises(InputError):
        ActivationQuantizer(**kwargs).fit(relu_like())


def test_bad_activations_raise():
    q = ActivationQuantizer()
    with pytest.raises(InputError, match="not fitted"):
        q.transform(relu_like())
    q.fit(relu_like(d=40))
    with pytest.raises(InputError, match="40"):
        q.transform(relu_like(d=41))
    bad = relu_like()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        q.transform(bad)
    with pytest.raises(InputError):
        q.transform(np.zeros(40))
    with pytest.raises(InputError, match="sharpness"):
        q.smooth(torch.zeros(2, 40), 0.0)


# -- model -> codes -----------------------------------------------------------------------------------
def test_pool_activation_matches_adaptive_pool():
    a = torch.rand(2, 64, 8, 8)
    p = pool_activation(a, 4)
    assert p.shape == (2, 1024)
    torch.testing.assert_close(p, F.adaptive_avg_pool2d(a, 4).flatten(1))
    assert pool_activation(a, None).shape == (2, 4096)
    assert pool_activation(torch.rand(3, 7), 4).shape == (3, 7)  # non-spatial layers are left as they are


def test_code_extractor_matches_manual_pipeline():
    model = tiny_model()
    x = torch.rand(40, 1, 8, 8)
    layers = ["layer3.1.relu", "layer3.2.relu"]
    ext = CodeExtractor(model, layers, levels=4, pool=1, batch_size=16).fit(x)
    codes = ext.transform(x)
    _, ref = extract_activations(model, x, layers, flatten=False)
    for n in layers:
        pooled = ref[n].mean((2, 3))  # pool=1: global average, 64 units
        q = ActivationQuantizer(levels=4).fit(pooled)
        np.testing.assert_array_equal(codes[n], q.transform(pooled))
        assert codes[n].shape == (40, 64) and codes[n].dtype == np.uint8
    again = extract_codes(model, x, layers, ext.quantizers_, pool=1)
    for n in layers:
        np.testing.assert_array_equal(again[n], codes[n])


def test_activations_and_logits_one_pass_matches_model():
    model = tiny_model()
    x = torch.rand(10, 1, 8, 8)
    acts, logits = activations_and_logits(model, x, ["layer3.2.relu"], pool=None, batch_size=4)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
    assert acts["layer3.2.relu"].shape == (10, 64 * 2 * 2)
    assert layer_activations(model, x, "layer3.2.relu", pool=2)["layer3.2.relu"].shape == (10, 256)


def test_extraction_rejects_bad_inputs():
    model = tiny_model()
    with pytest.raises(InputError, match="no layer named"):
        layer_activations(model, torch.rand(2, 1, 8, 8), ["layer9.relu"])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        layer_activations(model, torch.rand(2, 1, 8, 8) * 3, ["layer3.2.relu"])
    with pytest.raises(InputError, match="pool"):
        layer_activations(model, torch.rand(2, 1, 8, 8), ["layer3.2.relu"], pool=0)
    with pytest.raises(InputError, match="not fitted"):
        CodeExtractor(model, ["layer3.2.relu"]).transform(torch.rand(2, 1, 8, 8))
