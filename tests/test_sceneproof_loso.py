"""Leave-one-source-out evaluation (safetynet sceneproof loso), the adversary fakes and the frame features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import require_data
from safetynet import cli
from safetynet.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from safetynet.sceneproof import loso
from safetynet.sceneproof.fakes import (ADVERSARY_FAKES, PLANE_FOCAL, flat_print, luminance, luminance_depth, make_fakes,
                                        screen_photo)
from safetynet.sceneproof.features import FEATURE_NAMES, chamfer_ratio, edge_agreement, frame_features, plane_residual
from safetynet.sceneproof.frames import FrameSet
from safetynet.sceneproof.loso_config import LosoConfig

SMALL = ["metric3d-nyu", "nyu", "graspnet-realsense"]  # 3 sources, 6 frames: the command end to end in seconds


def _batch(B: int = 3, H: int = 48, W: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((B, 3, H, W), generator=g)
    depth = 0.5 + 3 * torch.rand((B, 1, H, W), generator=g)
    valid = torch.rand((B, 1, H, W), generator=g) > 0.1
    return image, depth * valid, valid


def _feature(x: np.ndarray, name: str) -> float:
    return float(x[FEATURE_NAMES.index(name)])


# ------------------------------------------------------------------------------- adversary fakes
def _plane_fit_3d(depth: np.ndarray, valid: np.ndarray) -> float:
    """RMS distance (m) of the back-projected points to their least-squares plane (pinhole, focal PLANE_FOCAL * W)."""
    H, W = depth.shape
    f = PLANE_FOCAL * W
    ys, xs = np.nonzero(valid)
    z = depth[ys, xs].astype(np.float64)
    P = np.stack([(xs - (W - 1) / 2) / f * z, (ys - (H - 1) / 2) / f * z, z], axis=1)
    P -= P.mean(0)
    return float(np.linalg.svd(P, compute_uv=False)[-1] / np.sqrt(len(P)))


def test_flat_print_depth_is_an_exact_plane():
    image, depth, valid = _batch()
    _, d, v = flat_print(image, depth, valid, seed=3)
    assert v.all()
    for i in range(len(d)):
        assert _plane_fit_3d(d[i, 0].numpy(), v[i, 0].numpy()) < 1e-4  # float32 depth: ~0
        assert plane_residual(d[i, 0].numpy(), v[i, 0].numpy())[0] < 1e-5
        assert 0.3 * 0.8 <= float(d[i].median()) <= 1.2 * 1.25  # arm's length (a tilted plane spreads a little)
    # a real-looking random depth map is far from a plane
    assert _plane_fit_3d(depth[0, 0].numpy(), valid[0, 0].numpy()) > 0.1


def test_screen_photo_is_a_noisy_plane_with_holes():
    image, depth, valid = _batch(B=4, H=96, W=128)
    img, d, v = screen_photo(image, depth, valid, seed=1)
    assert torch.equal(img, image)
    assert not v.all() and v.float().mean() > 0.6  # holes, but mostly valid
    assert bool((d[~v] == 0).all()) and bool((d[v] > 0).all())
    for i in range(len(d)):
        rms = _plane_fit_3d(d[i, 0].numpy(), v[i, 0].numpy())
        assert 1e-4 < rms < 0.02  # sensor noise of millimetres, not a scene
        assert torch.equal(d[i][v[i]], torch.round(d[i][v[i]] * 1000) / 1000)  # millimetre steps
    again = screen_photo(image, depth, valid, seed=1)
    assert torch.equal(again[1], d) and not torch.equal(screen_photo(image, depth, valid, seed=2)[1], d)


def test_luminance_depth_follows_brightness():
    image, depth, valid = _batch(B=4)
    img, d, v = luminance_depth(image, depth, valid, seed=0)
    assert torch.equal(v, valid) and torch.equal(img, image)
    lum = luminance(image)
    signs = []
    for i in range(4):
        r = np.corrcoef(lum[i][v[i]].numpy(), d[i][v[i]].numpy())[0, 1]
        assert abs(r) > 0.99
        signs.append(np.sign(r))
        q = torch.quantile(depth[i][valid[i]], torch.tensor([0.05, 0.95]))
        assert float(d[i][v[i]].min()) >= float(q[0]) - 1e-3 and float(d[i][v[i]].max()) <= float(q[1]) + 1e-3
    # the real depth does not follow brightness
    assert abs(np.corrcoef(lum[0][valid[0]].numpy(), depth[0][valid[0]].numpy())[0, 1]) < 0.1


@pytest.mark.parametrize("kind", list(ADVERSARY_FAKES))
def test_adversary_fakes_keep_the_frame_contract(kind):
    image, depth, valid = _batch()
    before = (image.clone(), depth.clone(), valid.clone())
    img, d, v = make_fakes(kind, image, depth, valid, seed=0)
    assert img.shape == image.shape and d.shape == depth.shape and v.dtype == torch.bool
    assert bool((d[~v] == 0).all()) and bool((d >= 0).all())
    assert torch.equal(image, before[0]) and torch.equal(depth, before[1]) and torch.equal(valid, before[2])


# -------------------------------------------------------------------------------------- features
def test_features_match_a_numpy_reference_on_a_synthetic_frame():
    H, W = 64, 96
    rng = np.random.default_rng(0)
    image = np.full((3, H, W), 0.2)
    image[:, :, W // 2:] = 0.8  # one vertical image edge
    image += rng.normal(0, 0.005, image.shape)
    depth = np.where(np.arange(W)[None, :] < W // 2, 1.0, 2.0) * np.ones((H, 1))  # a depth edge at the same column
    valid = np.ones((H, W), bool)
    valid[:5, :10] = False
    depth = depth * valid
    f = frame_features(image, depth, valid)
    assert f.shape == (len(FEATURE_NAMES),)
    assert _feature(f, "valid_share") == pytest.approx(valid.mean())
    assert _feature(f, "median_depth_m") == pytest.approx(np.median(depth[valid]))
    lum = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    assert _feature(f, "corr_lum_depth") == pytest.approx(np.corrcoef(lum[valid], depth[valid])[0, 1], abs=1e-9)
    assert _feature(f, "edge_agree_s1") == pytest.approx(1.0)  # the depth edge lies on the image edge
    # shifted 3 pixels sideways it misses the image edge, shifted along it it still agrees: gain 1 - (0+0+1+1)/4
    assert _feature(f, "edge_agree_shift_gain") == pytest.approx(0.5)
    # the same depth edge moved 20 columns off the image edge agrees nowhere
    moved = np.roll(depth, 20, axis=1) * valid
    assert edge_agreement(lum, np.log(np.where(moved > 0, moved, 1.0)), moved > 0)[0] == pytest.approx(0.0)
    # two planes at different depths are not one plane; one plane is
    assert _feature(f, "plane_inliers") < 0.6
    xs = np.arange(W)[None, :] / W
    plane = 1.0 / (0.5 + 0.2 * xs + 0.1 * (np.arange(H)[:, None] / H))
    res, inl = plane_residual(plane, np.ones((H, W), bool))
    assert res < 1e-9 and inl == 1.0


def test_features_without_depth_are_finite_and_abstain():
    image, depth, valid = np.random.default_rng(1).random((3, 32, 32)), np.zeros((32, 32)), np.zeros((32, 32), bool)
    f = frame_features(image, depth, valid)
    assert np.isfinite(f).all() and _feature(f, "valid_share") == 0
    model = loso.FeatureModel(min_valid=0.05)
    assert not model.enough_depth(f[None])[0]


# ---------------------------------------------------------------------------------- split and rule
def test_loso_splits_never_put_a_group_on_both_sides():
    groups = ["a", "a", "b", "c", "c", "c"]
    splits = loso.loso_splits(groups)
    assert [s[0] for s in splits] == ["a", "b", "c"]
    for name, tr, te in splits:
        assert set(np.asarray(groups)[te]) == {name} and name not in set(np.asarray(groups)[tr])
        assert sorted([*tr, *te]) == list(range(len(groups)))
    assert loso.group_of("cleargrasp-d435-transparent/scene-080") == "cleargrasp-d435-transparent"
    assert loso.group_of("open3d/other_formats/NYU") == "open3d"


def test_choose_threshold_separates_when_possible():
    p = np.array([0.1, 0.2, 0.15, 0.8, 0.9, 0.7])
    group = np.array(["a", "a", "b", "a", "b", "b"], dtype=object)
    kind = np.array(["real", "real", "real", "swap", "swap", "plane"], dtype=object)
    t = loso.choose_threshold(p, group, kind)
    assert 0.2 < t < 0.7


def test_swap_and_insert_donors_come_from_other_sources():
    image, depth, valid = _batch(B=6)
    fs = FrameSet(image, depth, valid, ["s"] * 6, [f"f{i}" for i in range(6)])
    groups = ["a", "a", "b", "b", "c", "c"]
    rows = loso.make_rows(fs, groups, ["swap_depth", "insert_region"], seed=0, donors=(fs, groups))
    fakes = rows.kind != "real"
    assert fakes.sum() == 12
    assert all(d and d != g for d, g in zip(rows.donor[fakes], rows.group[fakes]))


# --------------------------------------------------------------------------------- on shared data
@pytest.fixture(scope="module")
def data_dir():
    require_data("rgbd")
    return require_data("rgbd").parent


def test_real_sources_are_top_level_folders_without_rendered_or_heldout(data_dir):
    fs, groups = loso.load_frames(data_dir / "rgbd", (48, 64), 1)
    names = set(groups)
    assert {"7scenes-kitchen", "cleargrasp-d435-transparent", "3dmatch-sun3d-xtion", "open3d", "nyu"} <= names
    assert "icl-nuim-rendered" not in names and len(names) == len(groups)  # one frame per source here
    assert all("/" not in g for g in names)
    assert not any("rgbd-heldout" in s for s in fs.sources)


def test_loso_command_end_to_end_on_three_sources(data_dir, tmp_path, monkeypatch):
    roots = []
    real_load = loso.load_frames

    def spy(root, *a, **k):
        roots.append(root)
        return real_load(root, *a, **k)

    monkeypatch.setattr(loso, "load_frames", spy)
    out = tmp_path / "loso"
    code = cli.main(["sceneproof", "loso", "--out", str(out), "--data-dir", str(data_dir), "--sources", *SMALL,
                     "--max-frames", "2", "--no-cnn", "--no-reporting", "--seed", "3", "--inner-folds", "2"])
    assert code == EXIT_OK
    doc = json.loads((out / "results.json").read_text())
    res = doc["results"]
    assert sorted(res["per_source"]) == sorted(SMALL)
    for name, entry in res["per_source"].items():
        assert name not in entry["training_sources"] and len(entry["training_sources"]) == 2
        assert isinstance(entry["features"]["real_accepted"], float)
        assert set(entry["features"]["caught"]) == set(res["train_kinds"]) | set(res["unfamiliar_kinds"])
    assert isinstance(res["summary"]["features"]["real_accepted_mean"], float)
    assert doc["config"]["seed"] == 3 and doc["config"]["sources"] == SMALL
    assert "git_commit" in doc["environment"] and "argv" in doc["environment"]
    assert "| **mean over sources** |" in (out / "report.md").read_text()
    assert roots and all(r.name == "rgbd" for r in roots)  # rgbd-heldout is never read without --reporting


@pytest.mark.parametrize("flags, words", [(["--max-frames", "0"], "max_frames"),
                                          (["--sources", "nyu", "nope", "open3d"], "unknown source"),
                                          (["--train-kinds", "zero_depth"], "both")])
def test_loso_bad_input_exits_3_and_writes_nothing(data_dir, tmp_path, capsys, flags, words):
    out = tmp_path / "loso"
    code = cli.main(["sceneproof", "loso", "--out", str(out), "--data-dir", str(data_dir), "--no-cnn", "--no-reporting",
                     *flags])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (out / "results.json").exists()


def test_loso_missing_data_folder_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(["sceneproof", "loso", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none"),
                     "--no-cnn"])
    assert code == EXIT_BAD_INPUT and "--data-dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_loso_config_defaults_keep_unfamiliar_kinds_out_of_training():
    cfg = LosoConfig()
    cfg.validate()
    assert not set(cfg.train_kinds) & set(cfg.unfamiliar_kinds)


def test_chamfer_ratio_aligned_edges_are_near_and_swapped_ones_are_not():
    H, W = 64, 96
    image = np.full((3, H, W), 0.2)
    image[:, 20:40, 30:60] = 0.9  # a bright box
    lum = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    valid = np.ones((H, W), bool)
    box = np.zeros((H, W))
    box[20:40, 30:60] = -0.5  # the box is nearer: its outline is a depth edge
    near, _ = chamfer_ratio(lum, box, valid)
    assert near == pytest.approx(0.0, abs=1e-9)  # every depth edge pixel lies on an image edge
    other = np.zeros((H, W))
    other[5:15, 70:90] = -0.5  # a depth edge somewhere the image has none
    far, _ = chamfer_ratio(lum, other, valid)
    assert far > 1.0  # farther from the image edges than an average pixel
