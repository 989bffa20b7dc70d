"""The sensor-agnostic feature model behind ``verify``: alignment features, the tree export (numpy
evaluator vs scikit-learn), persistence without pickle, and the shipped model on held-in data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from conftest import require_data
from safetynet import cli
from safetynet.errors import CheckpointError, InputError
from safetynet.exit_codes import EXIT_FAKE, EXIT_REAL
from safetynet.sceneproof.alignment_features import ALIGNMENT_NAMES, alignment_features
from safetynet.sceneproof.feature_model import (ALL_FEATURE_NAMES, FeatureVerifier, all_features,
                                                default_feature_model_dir, is_feature_model)
from safetynet.sceneproof.fakes import make_fakes
from safetynet.sceneproof.frames import FrameSet
from safetynet.sceneproof.tree_export import TreeEnsemble, export_hgb
from safetynet.sceneproof.verify import load_verifier, verify, verify_frames_features


# ------------------------------------------------------------------------------- synthetic frames
def _blocks_frame(H: int = 96, W: int = 128, seed: int = 0):
    """A frame of random rectangles whose depth steps exactly where the image steps (a registered pair)."""
    rng = np.random.default_rng(seed)
    lum = np.full((H, W), 0.5)
    depth = np.full((H, W), 2.0)
    for _ in range(12):
        h, w = rng.integers(10, 40, size=2)
        y, x = rng.integers(0, H - h), rng.integers(0, W - w)
        lum[y:y + h, x:x + w] = rng.uniform(0.1, 0.9)
        depth[y:y + h, x:x + w] = rng.uniform(0.8, 3.5)
    lum = lum + rng.normal(0, 0.005, size=(H, W))
    return np.repeat(lum[None], 3, axis=0).clip(0, 1), depth, np.ones((H, W), dtype=bool)


def _f(x: np.ndarray, name: str) -> float:
    return float(x[ALIGNMENT_NAMES.index(name)])


def test_alignment_prefers_offset_zero_only_for_registered_depth():
    image, depth, valid = _blocks_frame()
    aligned = alignment_features(image, depth, valid)
    shifted = alignment_features(image, np.roll(depth, (7, 9), axis=(0, 1)), valid)
    other_image, _, _ = _blocks_frame(seed=5)
    swapped = alignment_features(other_image, depth, valid)
    assert aligned.shape == (len(ALIGNMENT_NAMES),) and np.isfinite(aligned).all()
    assert _f(aligned, "off_zero_vs_best") > 0 and _f(aligned, "off_zero_rank") == 0.0
    assert _f(shifted, "off_zero_vs_best") < 0 and _f(shifted, "off_best_dist") > 5
    assert _f(swapped, "off_zero_vs_median") < _f(aligned, "off_zero_vs_median")
    assert _f(aligned, "patch_zero_best_share") > _f(shifted, "patch_zero_best_share")


def test_a_pasted_rectangle_leaves_a_sharp_seam():
    rng = np.random.default_rng(1)
    H, W = 96, 128
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.normal(size=(H, W)), 3)  # soft natural gradients, no one-pixel steps
    image = np.repeat(((smooth - smooth.min()) / np.ptp(smooth))[None], 3, axis=0)
    depth = 1.0 + image[0]
    valid = np.ones((H, W), dtype=bool)
    before = alignment_features(image, depth, valid)
    pasted_i, pasted_d = image.copy(), depth.copy()
    pasted_i[:, 30:70, 40:100] = 1.0 - image[:, 30:70, 40:100]
    pasted_d[30:70, 40:100] = 3.0
    after = alignment_features(pasted_i, pasted_d, valid)
    # The seam is 60 of 128 columns wide (40 of 96 rows tall); where both sides are nearly equally
    # bright there is no step, so only part of it counts.
    assert _f(before, "seam_row") < 0.05 and _f(before, "seam_col") < 0.05
    assert _f(after, "seam_row") > 0.2 and _f(after, "seam_col") > 0.2 and _f(after, "seam_depth_row") > 0.2


def test_jpeg_depth_sits_on_an_8bit_lattice_and_has_blocks():
    image, depth, valid = _blocks_frame()
    t = lambda a: torch.from_numpy(np.asarray(a))[None]  # noqa: E731
    img, dep, val = make_fakes("jpeg_degrade", t(image).float(), t(depth)[:, None].float(), t(valid)[:, None], seed=0)
    real = alignment_features(image, depth + np.random.default_rng(0).uniform(0, 1e-3, depth.shape), valid)
    jpeg = alignment_features(img[0].double().numpy(), dep[0, 0].double().numpy(), val[0, 0].numpy())
    assert _f(jpeg, "depth_on_8bit_lattice") > 0.9 > _f(real, "depth_on_8bit_lattice")


def test_alignment_features_without_depth_are_finite():
    image, depth, valid = _blocks_frame()
    f = alignment_features(image, depth * 0, valid & False)
    assert np.isfinite(f).all() and _f(f, "off_zero_rank") == 1.0


# -------------------------------------------------------------------------------- the tree export
def _fitted(seed: int = 0, n_features: int = 7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, n_features))
    X[rng.random(X.shape) < 0.05] = np.nan  # the trees learn where missing values go
    y = (np.nansum(X[:, :3], axis=1) + 0.3 * rng.normal(size=400) > 0).astype(int)
    return HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=seed).fit(X, y), rng


def test_numpy_trees_equal_sklearn_predict_proba_on_random_inputs():
    clf, rng = _fitted()
    trees = TreeEnsemble(export_hgb(clf), 7)
    Z = rng.normal(scale=2.0, size=(500, 7))
    Z[rng.random(Z.shape) < 0.1] = np.nan
    np.testing.assert_allclose(trees.p_class1(Z), clf.predict_proba(Z)[:, 1], rtol=0, atol=1e-12)
    # Exactly on a threshold goes left (x <= threshold), as in scikit-learn.
    a = trees.arrays
    inner = np.flatnonzero(a["is_leaf"] == 0)[:20]
    T = np.tile(np.nanmedian(Z, axis=0), (len(inner), 1))
    T[np.arange(len(inner)), a["feature"][inner]] = a["threshold"][inner]
    np.testing.assert_allclose(trees.p_class1(T), clf.predict_proba(T)[:, 1], rtol=0, atol=1e-12)


def test_tree_export_refuses_what_it_cannot_represent():
    with pytest.raises(InputError, match="fitted"):
        export_hgb(HistGradientBoostingClassifier())
    clf, _ = _fitted()
    arrays = export_hgb(clf)
    with pytest.raises(CheckpointError, match="features outside"):
        TreeEnsemble(arrays, 2)
    bad = dict(arrays, left=arrays["left"] + len(arrays["value"]))
    with pytest.raises(CheckpointError, match="points outside"):
        TreeEnsemble(bad, 7)
    with pytest.raises(InputError, match="expect"):
        TreeEnsemble(arrays, 7).raw(np.zeros((2, 6)))


# ------------------------------------------------------------------------------------ persistence
def _model_on_features(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(ALL_FEATURE_NAMES)
    X = rng.normal(size=(300, n))
    X[:, 0] = rng.uniform(0, 1, 300)  # valid_share
    y = (X[:, 5] > 0).astype(int)
    return HistGradientBoostingClassifier(max_iter=20, random_state=seed).fit(X, y), X


def test_round_trip_without_pickle_and_sha256_check(tmp_path):
    clf, X = _model_on_features()
    d = FeatureVerifier.save(tmp_path / "m", clf, {"threshold": 0.4, "min_valid": 0.05, "size": [120, 160]})
    assert is_feature_model(d) and not is_feature_model(tmp_path)
    m = FeatureVerifier.load(d)
    expect = np.where(X[:, 0] >= 0.05, clf.predict_proba(X)[:, 1], 1.0)
    np.testing.assert_allclose(m.p_fake(X), expect, rtol=0, atol=1e-12)
    assert m.threshold == 0.4 and m.size == (120, 160)
    with np.load(d / "trees.npz", allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)
    # A changed byte is refused before anything is read.
    raw = bytearray((d / "trees.npz").read_bytes())
    raw[-10] ^= 1
    (d / "trees.npz").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        FeatureVerifier.load(d)


def test_a_model_for_other_features_is_refused(tmp_path):
    clf, _ = _model_on_features()
    d = FeatureVerifier.save(tmp_path / "m", clf, {"threshold": 0.4, "min_valid": 0.05, "size": [120, 160]})
    doc = json.loads((d / "model.json").read_text())
    doc["feature_names"] = doc["feature_names"][:-1]
    (d / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="other features"):
        FeatureVerifier.load(d)
    with pytest.raises(CheckpointError, match="not found"):
        FeatureVerifier.load(tmp_path / "nothing")


# ----------------------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def kitchen():
    """A held-in real capture (7-Scenes kitchen is part of the shipped model's training data)."""
    root = require_data("rgbd", "7scenes-kitchen")
    return root / "frame-000000.color.jpg", root / "frame-000000.depth.png"


def test_shipped_model_loads_by_default_and_cnn_stays_available():
    assert is_feature_model(default_feature_model_dir())
    m = load_verifier()
    assert isinstance(m, FeatureVerifier) and m.directory == default_feature_model_dir()
    assert type(load_verifier("cnn")).__name__ == "SceneProof"


def test_shipped_model_judges_a_held_in_capture_real_and_its_plane_and_zero_fakes_fake(kitchen):
    from safetynet.data.rgbd.frame import resize_rgbd
    from safetynet.data.rgbd.formats import read_depth_array, read_image
    from safetynet.sceneproof.verify import crop_to_aspect

    image, depth = kitchen
    v = verify(image, depth)
    assert v.model_kind == "features" and v.verdict == "real" and v.exit_code == EXIT_REAL and not v.abstained
    m = load_verifier()
    img = torch.from_numpy(read_image(image)).permute(2, 0, 1).float()[None] / 255
    d, val = read_depth_array(depth, None)
    dep = torch.from_numpy(np.asarray(d, dtype=np.float32))[None, None]
    va = torch.from_numpy(np.asarray(val))[None, None]
    H, W = m.size
    img, dep, va = resize_rgbd(*(x.contiguous() for x in crop_to_aspect(img, dep, va, W / H)), (H, W))
    for kind in ("flat_print", "zero_depth"):
        fi, fd, fv = make_fakes(kind, img, dep, va, seed=0)
        out = verify_frames_features(m, FrameSet(fi, fd, fv, ["k"], ["k"]))[0]
        assert out.verdict == "fake" and out.exit_code == EXIT_FAKE, kind
        assert out.abstained == (kind == "zero_depth")


def test_verify_cli_default_and_cnn_option(kitchen, capsys):
    image, depth = kitchen
    assert cli.main(["sceneproof", "verify", str(image), str(depth), "--json"]) == EXIT_REAL
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_kind"] == "features" and doc["n_patches"] == 0 and doc["patches"] == []
    assert 0 <= doc["real_score"] <= 1 and doc["real_score"] >= doc["real_threshold"]
    cli.main(["sceneproof", "verify", str(image), str(depth), "--json", "--model", "cnn"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_kind"] == "cnn" and doc["n_patches"] > 0


def test_shipped_model_copy_with_a_changed_threshold_changes_the_verdict(kitchen, tmp_path):
    image, depth = kitchen
    d = tmp_path / "strict"
    shutil.copytree(default_feature_model_dir(), d)
    doc = json.loads((d / "model.json").read_text())
    doc["threshold"] = -1.0  # every P(fake) exceeds it
    (d / "model.json").write_text(json.dumps(doc))
    assert verify(image, depth, d).verdict == "fake"


def test_all_features_is_the_concatenation():
    image, depth, valid = _blocks_frame()
    f = all_features(image, depth, valid)
    assert f.shape == (len(ALL_FEATURE_NAMES),) and ALL_FEATURE_NAMES[0] == "valid_share"
    np.testing.assert_array_equal(f[-len(ALIGNMENT_NAMES):], alignment_features(image, depth, valid))


# ------------------------------------------------------------------------- leakage and training
def test_fold_training_rows_never_hold_the_held_out_source_or_its_depth():
    """The LOSO fold filter (loso.run_loso) and the inner folds: no row of the held-out source, and no
    swapped or pasted depth donated by it, reaches training."""
    from safetynet.sceneproof import loso

    rng = np.random.default_rng(0)
    B, H, W = 6, 48, 64
    image = torch.rand((B, 3, H, W), generator=torch.Generator().manual_seed(0))
    depth = torch.from_numpy(rng.uniform(0.5, 3.0, size=(B, 1, H, W)).astype(np.float32))
    valid = torch.ones((B, 1, H, W), dtype=torch.bool)
    fs = FrameSet(image, depth, valid, ["s"] * B, [f"f{i}" for i in range(B)])
    groups = ["a", "a", "b", "b", "c", "c"]
    rows = loso.make_rows(fs, groups, ["swap_depth", "insert_region", "zero_depth"], seed=0, donors=(fs, groups))
    for name, tr, te in loso.loso_splits(rows.group):
        train = rows.take(tr)
        train = train.take((train.donor != name) & np.isin(train.kind, ["real", "swap_depth", "insert_region"]))
        assert name not in set(train.group) and name not in set(train.donor)
        assert set(rows.take(te).group) == {name}
        assert "zero_depth" not in set(train.kind)  # unfamiliar kinds never reach training


def test_shipped_model_provenance_excludes_heldout_and_records_its_command():
    doc = json.loads((default_feature_model_dir() / "model.json").read_text())
    t = doc["training"]
    assert len(t["sources"]) == 19 and not any("heldout" in s for s in t["sources"])
    assert "icl-nuim-rendered" not in t["sources"]  # rendered: a fake, never a real source
    assert "sceneproof fit-features" in t["command"] and "--seed 0" in t["command"]
    assert {"flat_print", "zero_depth"}.isdisjoint(doc["train_kinds"])  # kept unfamiliar
    assert 0 < doc["threshold"] < 1 and doc["min_valid"] == 0.05


def test_fit_features_command_writes_a_loadable_model(tmp_path):
    data = require_data("rgbd").parent
    out = tmp_path / "model"
    code = cli.main(["sceneproof", "fit-features", "--out", str(out), "--data-dir", str(data), "--max-frames", "1",
                     "--max-iter", "5", "--inner-folds", "2", "--train-kinds", "swap_depth", "screen_photo",
                     "zero_depth", "--seed", "1"])
    assert code == 0
    m = FeatureVerifier.load(out)
    assert m.settings["train_kinds"] == ["swap_depth", "screen_photo", "zero_depth"]
    assert m.settings["training"]["config"]["seed"] == 1 and m.settings["training"]["rows"] == 19 * 4
    assert is_feature_model(out) and load_verifier(out).threshold == m.threshold
