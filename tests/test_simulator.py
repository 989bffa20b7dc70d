"""The RGB-D scene simulator: determinism, geometry consistent with the camera, and the Kinect model
against hand-computed expectations (quantisation levels, range/grazing limits, projector shadow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from safetynet.data.rgbd import RGBDFrame
from safetynet.data.rgbd import raycast, rooms
from safetynet.data.rgbd.sensor import SensorModel, kinect_depth
from safetynet.data.rgbd.simulator import simulate_scenes
from safetynet.errors import InputError


@pytest.fixture(scope="module")
def sim():
    return simulate_scenes(12, size=(48, 64), seed=7)


def test_shapes_dtypes_ranges(sim):
    n, H, W = 12, 48, 64
    assert sim.image.shape == (n, 3, H, W) and sim.image.dtype == torch.float32
    assert sim.sensor_image.shape == (n, 3, H, W)
    assert sim.depth.shape == sim.sensor_depth.shape == sim.sensor_valid.shape == (n, 1, H, W)
    assert sim.sensor_valid.dtype == torch.bool
    for t in (sim.image, sim.sensor_image):
        assert t.min() >= 0 and t.max() <= 1
    assert (sim.depth > 0).all() and torch.isfinite(sim.depth).all()
    assert torch.equal(sim.sensor_valid, sim.sensor_depth > 0)
    frac = sim.sensor_valid.float().mean().item()
    assert 0.5 < frac < 0.995  # holes exist, but most pixels read
    # The sensor image is 8-bit quantised.
    assert torch.allclose(sim.sensor_image * 255, (sim.sensor_image * 255).round(), atol=1e-4)
    frames = sim.frames()
    assert len(frames) == n and isinstance(frames[0], RGBDFrame) and frames[0].scene == sim.scene[0]
    assert sim.frames(sensor=False)[0].valid.all()


def test_deterministic_and_independent_of_n_and_chunking(sim):
    again = simulate_scenes(5, size=(48, 64), seed=7, chunk=2)
    for name in ("image", "depth", "sensor_image", "sensor_depth", "sensor_valid"):
        assert torch.equal(getattr(again, name), getattr(sim, name)[:5]), name
    other = simulate_scenes(5, size=(48, 64), seed=8)
    assert not torch.equal(other.depth, again.depth)
    assert not torch.equal(other.image, again.image)


def test_views_share_rooms():
    s = simulate_scenes(4, size=(24, 32), seed=1, views_per_scene=2)
    assert s.scene[0] == s.scene[1] != s.scene[2] == s.scene[3]
    assert not torch.equal(s.depth[0], s.depth[1])  # another camera pose


def test_geometry_matches_camera(sim):
    """Back-project clean depth with the returned intrinsics and pose: every point must lie in the
    room above the floor (y >= 0) and below the ceiling, and the floor (y = 0) must be seen
    exactly planar where it is visible."""
    n, _, H, W = sim.depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    floors = 0
    for i in range(n):
        fx, fy, cx, cy = sim.intrinsics[i].tolist()
        z = sim.depth[i, 0]
        cam = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)  # (H, W, 3)
        T = sim.cam_to_world[i]
        world = cam @ T[:3, :3].T + T[:3, 3]
        y = world[..., 1]
        assert y.min() > -1e-3 and y.max() < 3.2 + 1e-3
        floors += int(((y.abs() < 1e-3).float().mean() > 0.02).item())
        R = T[:3, :3]
        assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5)  # a rotation
    assert floors >= n // 2  # the camera looks down a little, so the floor is usually in view


def _slab_hits(p, q, lo, hi):
    """Whether segments p -> q (N, 3) cross the axis-aligned box [lo, hi] (independent numpy code)."""
    d = q - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - p) / d, (hi - p) / d
    tn = np.nanmax(np.minimum(t1, t2), axis=1)
    tf = np.nanmin(np.maximum(t1, t2), axis=1)
    return (tn <= tf) & (tf > 0) & (tn < 1)


@pytest.mark.parametrize("shadows", [True, False])
def test_lambertian_shading_and_shadows_by_hand(shadows):
    """A grey room with one floating slab under a point light: every pixel's brightness must be
    albedo * (ambient + power * cos(n, l) * visible / (1 + (dist/3)^2)) up to one exposure
    factor, with cos, dist and visibility computed here independently from the depth map."""
    mat = np.zeros(rooms._MAT_DIM)
    mat[0:3] = 0.5  # flat grey
    L = np.array([4.0, 2.5, 4.0])
    box_c, box_h = np.array([2.0, 1.5, 2.5]), np.array([0.3, 0.05, 0.3])
    light = np.array([2.0, 2.4, 2.0])
    room = rooms._Room(L, [(box_c, box_h, 0.0, [0] * 6)], [], [mat], [0] * 6, light, 0.2, 1.0)
    pitch = math.radians(-25)
    fwd = np.array([0.0, math.sin(pitch), math.cos(pitch)])
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)
    H, W = 40, 48
    out = raycast._render_chunk([room], [(np.array([2.0, 1.6, 0.3]), R, math.radians(70))], H, W, shadows)
    fx = float(out["fx"][0])
    z = out["depth"][0, 0].double().numpy()
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    cam = np.stack([(u - (W - 1) / 2) / fx * z, (v - (H - 1) / 2) / fx * z, z], -1).reshape(-1, 3)
    world = cam @ R.T + np.array([2.0, 1.6, 0.3])
    # Normals from which surface the point lies on (walls, floor, ceiling, the slab's faces).
    n = np.zeros_like(world)
    eps = 1e-3
    for axis in range(3):
        n[np.abs(world[:, axis]) < eps, axis] = 1.0
        n[np.abs(world[:, axis] - L[axis]) < eps, axis] = -1.0
    on_box = np.all(np.abs(world - box_c) <= box_h + eps, axis=1)
    for axis in range(3):
        face = on_box & (np.abs(np.abs(world[:, axis] - box_c[axis]) - box_h[axis]) < eps)
        n[face] = 0.0
        n[face, axis] = np.sign(world[face, axis] - box_c[axis])
    known = np.abs(n).sum(1) == 1  # skip edge pixels that touch two faces
    to_l = light - world
    dist = np.linalg.norm(to_l, axis=1)
    cos = np.clip((n * to_l).sum(1) / dist, 0, None)
    lit = np.ones(len(world), dtype=bool)
    if shadows:
        lit = ~_slab_hits(world + 1e-3 * n, np.broadcast_to(light, world.shape), box_c - box_h, box_c + box_h)
    expect = 0.5 * (0.2 + cos * lit / (1 + (dist / 3.0) ** 2))
    img = out["image"][0, 0].double().numpy().reshape(-1)
    use = known & (img < 0.999)
    ratio = img[use] ** 2.2 / expect[use]
    assert use.sum() > 0.8 * H * W
    assert ratio.std() / ratio.mean() < 0.01
    assert (use & on_box).sum() > 10  # the slab is in view
    if shadows:
        assert (~lit[use]).sum() > 10  # and so is its shadow


def test_kinect_quantisation_on_a_flat_wall():
    B, H, W = 1, 40, 50
    z = torch.full((B, 1, H, W), 2.0)
    s = SensorModel(dropout=0.0, blob_fraction=0.0)
    d, v = kinect_depth(z, torch.ones_like(z), torch.tensor([60.0]), torch.Generator().manual_seed(0), s)
    assert v.all()  # a frontal wall at 2 m reads everywhere
    fb = s.sensor_focal * s.baseline
    # Every reading is fb / (k / 8) for an integer k: disparity quantised to 1/8 px.
    k = fb / d[v] * 8
    assert torch.allclose(k, k.round(), atol=1e-3)
    # Spread: disparity noise 0.07 px plus the 1/8 px step gives sigma_z ~ z^2/fb * 0.08.
    sigma_expect = 2.0 ** 2 / fb * math.sqrt(s.disparity_noise ** 2 + s.disparity_step ** 2 / 12)
    assert 0.5 * sigma_expect < d[v].std().item() < 2.0 * sigma_expect
    assert abs(d[v].mean().item() - 2.0) < 0.01


def test_kinect_noise_grows_with_depth_squared():
    g = torch.Generator().manual_seed(1)
    s = SensorModel(dropout=0.0, blob_fraction=0.0, disparity_step=1e-6)  # isolate the noise
    stds = []
    for z0 in (1.0, 4.0):
        z = torch.full((1, 1, 64, 64), z0)
        d, v = kinect_depth(z, torch.ones_like(z), torch.tensor([60.0]), g, s)
        stds.append(d[v].std().item())
    assert 10 < stds[1] / stds[0] < 22  # (4/1)^2 = 16


def test_kinect_holes_range_grazing_and_projector_shadow():
    s = SensorModel(dropout=0.0, blob_fraction=0.0)
    H, W, fx = 20, 60, 60.0
    # Range and grazing limits.
    for z0, cos_inc in ((0.3, 1.0), (9.0, 1.0), (2.0, math.cos(math.radians(80)))):
        z = torch.full((1, 1, H, W), z0)
        _, v = kinect_depth(z, torch.full_like(z, cos_inc), torch.tensor([fx]), torch.Generator().manual_seed(0), s)
        assert not v.any(), (z0, cos_inc)
    # A near object (1 m) on the left half in front of a wall at 3 m: the projector, to the
    # camera's right, cannot light the wall just right of the edge. Band width by hand:
    # fx * b * (1/1 - 1/3) = 60 * 0.075 * 2/3 = 3 px.
    z = torch.full((1, 1, H, W), 3.0)
    z[..., : W // 2] = 1.0
    _, v = kinect_depth(z, torch.ones_like(z), torch.tensor([fx]), torch.Generator().manual_seed(0), s)
    col = v[0, 0].float().mean(0)  # valid fraction per column
    edge = W // 2
    assert (col[edge: edge + 3] == 0).all()  # edge + shadow band
    assert (col[edge + 5:] == 1).all() and (col[: edge - 2] == 1).all()


def test_bad_arguments():
    with pytest.raises(InputError):
        simulate_scenes(0)
    with pytest.raises(InputError):
        simulate_scenes(2, size=(4, 4))
    with pytest.raises(InputError):
        simulate_scenes(2, views_per_scene=0)
