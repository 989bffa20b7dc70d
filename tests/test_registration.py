"""Depth-to-colour registration by edge alignment (safetynet.data.rgbd.registration).

Synthetic checks use the simulator, whose depth is registered by construction: misregister it by
a known transform and the estimate must undo it. The real-data checks pin what motivated the
module: 7-Scenes' unregistered depth (the data set says its cameras are not calibrated) and
Open3D's registered frames.
"""

from __future__ import annotations

import pytest
import torch

from safetynet.data.rgbd import load_real_frames
from safetynet.data.rgbd.simulator import simulate_scenes
from safetynet.data.rgbd.registration import (Registration, apply_registration, calibrate_registration,
                                              edge_maps, estimate_registration)
from safetynet.errors import InputError

from conftest import require_data

H, W = 60, 80


@pytest.fixture(scope="module")
def sim():
    frames = simulate_scenes(24, size=(H, W), seed=3, views_per_scene=2).frames(sensor=False)
    return (torch.stack([f.image for f in frames]), torch.stack([f.depth for f in frames]),
            torch.stack([f.valid for f in frames]))


def test_registered_frames_are_left_alone(sim):
    reg = estimate_registration(*sim)
    assert reg.is_identity, reg
    _, verdict = calibrate_registration(*sim, min_frames=10)
    assert verdict.startswith("skipped"), verdict


@pytest.mark.parametrize("dy,dx", [(3, -5), (-2, 4), (0, 6)])
def test_known_shift_is_undone(sim, dy, dx):
    image, depth, valid = sim
    bad = Registration(dy=dy / H, dx=dx / W)
    d2, v2 = apply_registration(depth, valid, bad)
    reg = estimate_registration(image, d2, v2)
    assert reg.scale == 1.0
    assert (round(reg.dy * H), round(reg.dx * W)) == (-dy, -dx)
    assert reg.gain > 0.2
    fixed, verdict = calibrate_registration(image, d2, v2, min_frames=10)
    assert verdict == "applied" and fixed == reg


def test_known_scale_is_undone(sim):
    image, depth, valid = sim
    d2, v2 = apply_registration(depth, valid, Registration(scale=1 / 1.1))  # a narrower-FOV depth camera
    reg = estimate_registration(image, d2, v2)
    assert reg.scale == pytest.approx(1.1)
    assert abs(round(reg.dy * H)) <= 1 and abs(round(reg.dx * W)) <= 1


def test_apply_moves_readings_without_inventing_any(sim):
    _, depth, valid = sim
    reg = Registration(scale=0.9, dy=3 / H, dx=-4 / W)
    d2, v2 = apply_registration(depth, valid, reg)
    assert d2.shape == depth.shape and v2.dtype == torch.bool
    assert bool((d2[~v2] == 0).all()) and bool((d2[v2] > 0).all())
    for b in range(3):  # every output reading is one of that frame's input readings
        assert set(d2[b][v2[b]].tolist()) <= set(depth[b][valid[b]].tolist())
    # uncovered border: moving content 4 px left leaves the last columns without readings
    assert not v2[..., -3:].any()
    same_d, same_v = apply_registration(depth, valid, Registration())
    assert torch.equal(same_d, depth) and torch.equal(same_v, valid)


def test_calibration_refuses_too_few_frames(sim):
    image, depth, valid = sim
    d2, v2 = apply_registration(depth, valid, Registration(dy=3 / H))
    reg, verdict = calibrate_registration(image[:5], d2[:5], v2[:5], min_frames=20)
    assert verdict == "skipped: 5 frames < 20" and reg.is_identity


def test_edges_ignore_holes(sim):
    image, depth, valid = sim
    holes = valid.clone()
    holes[..., 20:40, 20:40] = False
    _, ed = edge_maps(image, depth * holes, holes)
    assert not ed[..., 21:39, 21:39].any()  # the rim of a hole is not a depth edge


def test_bad_inputs(sim):
    image, depth, valid = sim
    with pytest.raises(InputError, match="bool tensor"):
        estimate_registration(image, depth, valid.float())
    with pytest.raises(InputError, match="max_shift"):
        estimate_registration(image, depth, valid, max_shift=0.7)
    with pytest.raises(InputError, match="scales"):
        estimate_registration(image, depth, valid, scales=())
    with pytest.raises(InputError, match="matching depth"):
        estimate_registration(image[:, :, :-1], depth, valid)
    with pytest.raises(InputError, match="at least 2 frames"):
        estimate_registration(image[:1], depth[:1], valid[:1])
    flat = torch.ones_like(depth)
    with pytest.raises(InputError, match="no depth discontinuities"):
        estimate_registration(image, flat, torch.ones_like(valid))


def _stack(frames):
    return (torch.stack([f.image for f in frames]), torch.stack([f.depth for f in frames]),
            torch.stack([f.valid for f in frames]))


def test_7scenes_depth_is_unregistered_and_open3d_is_registered():
    root = require_data("rgbd")
    kitchen = _stack(load_real_frames(root, scenes=["7scenes-kitchen"], size=(120, 160), step=5))
    reg, verdict = calibrate_registration(*kitchen)
    # Kinect v1: the depth (IR) camera's focal length is ~1.1x the colour camera's
    assert verdict == "applied", (verdict, reg)
    assert 0.86 <= reg.scale <= 0.94 and reg.gain > 0.25
    open3d = _stack(load_real_frames(root, scenes=["open3d"], size=(120, 160)))
    o, verdict = calibrate_registration(*open3d, min_frames=2)
    assert o.scale == 1.0 and abs(round(o.dy * 120)) <= 1 and abs(round(o.dx * 160)) <= 1, o
    assert verdict == "skipped: registered to within a pixel"


def test_register_scenes_fixes_one_rig_in_train_and_val_only():
    from dataclasses import replace

    from safetynet.sceneproof.frames import register_scenes

    frames = simulate_scenes(30, size=(H, W), seed=8, views_per_scene=1).frames(sensor=False)
    bad = Registration(dy=3 / H, dx=-4 / W)  # rig "cam-a" stores its depth 3 px low and 4 px left

    def shifted(f):
        d, v = apply_registration(f.depth[None], f.valid[None], bad)
        return replace(f, depth=d[0], valid=v[0], scene="cam-a")

    train = [shifted(f) for f in frames[:24]] + [replace(f, scene="cam-b") for f in frames[24:28]]
    val = [shifted(frames[28]), replace(frames[29], scene="cam-b")]
    new_train, new_val, report = register_scenes(train, val, min_frames=20)
    assert report["cam-a"]["verdict"] == "applied"
    assert (round(report["cam-a"]["dy"] * H), round(report["cam-a"]["dx"] * W)) == (-3, 4)
    assert "cam-b" not in report  # too few frames to estimate: left as it is
    assert new_train[25] is train[25] and new_val[1] is val[1]
    # the validation frame of the fixed rig is fixed too: inside the frame, its depth is the original's again
    inner = (slice(None), slice(4, H - 4), slice(6, W - 6))
    assert torch.equal(new_val[0].depth[inner], frames[28].depth[inner])
    assert not torch.equal(val[0].depth[inner], frames[28].depth[inner])
    # A saved report is applied as it is, nothing estimated: the same frames come out, and a
    # skipped or changed record changes them accordingly.
    again_train, again_val, again_report = register_scenes(train, val, saved=report)
    assert again_report == report
    for a, b in zip(new_train + new_val, again_train + again_val):
        assert torch.equal(a.depth, b.depth) and torch.equal(a.valid, b.valid)
    skipped = {"cam-a": {**report["cam-a"], "verdict": "skipped: test"}}
    plain_train, _, _ = register_scenes(train, val, saved=skipped)
    assert plain_train[0] is train[0]
    with pytest.raises(InputError, match="lacks"):
        register_scenes(train, val, saved={"cam-a": {"verdict": "applied", "scale": 0.9}})


@pytest.mark.slow  # rebuilds SceneProof's training/validation frames (~100 s)
def test_evaluation_applies_the_shipped_bundles_saved_registration():
    """evaluate/robustness rebuild the validation frames with the registration the bundle was
    trained with (read from the bundle), and that is what a fresh estimate gives on the same data."""
    from safetynet.sceneproof.task import _frames_from_config
    from safetynet.sceneproof.bundle import SceneProof
    from safetynet.sceneproof.train import SceneProofConfig, load_frames

    root = require_data("rgbd").parent
    bundle = SceneProof.load()
    saved = bundle.settings["training"]["data"]["registration"]
    assert saved["7scenes-kitchen"]["verdict"] == "applied"
    val, info = _frames_from_config(bundle, str(root))
    assert info["registration"] == saved
    cfg = SceneProofConfig.from_saved(bundle.settings["training"]["config"])
    cfg.data_dir = str(root)
    _, fresh, fresh_info = load_frames(cfg, validation_only=True)
    assert fresh_info["registration"]["7scenes-kitchen"]["scale"] == saved["7scenes-kitchen"]["scale"]
    assert torch.equal(fresh.depth, val.depth) and torch.equal(fresh.valid, val.valid)
