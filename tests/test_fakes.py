"""Fake generators (each changes exactly what it should), the depth regressor, and patches/encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from safetynet.data.rgbd import load_real_frames, stack_frames
from safetynet.data.rgbd.simulator import simulate_scenes
from safetynet.errors import CheckpointError, InputError
from safetynet.sceneproof import (FAKES, RANDOM_FAKES, TEST_ONLY_FAKES, TRAIN_FAKES, DepthRegressor, augment_real,
                                  decode_depth, derangement, down_up_sample, encode_depth, insert_region,
                                  insert_region_boxes, jpeg_degrade, load_depth_regressor, make_fakes,
                                  patch_positions, predicted_depth, rendered, save_depth_regressor,
                                  shift_scale_depth, swap_depth, tile, tile_rgbd, to_network_input,
                                  train_depth_regressor, zero_depth)

from conftest import require_data

B, H, W = 6, 32, 40


@pytest.fixture(scope="module")
def batch():
    s = simulate_scenes(B, size=(H, W), seed=11)
    return s.sensor_image, s.sensor_depth, s.sensor_valid


def _toy_predictor(images):
    return 0.5 + 4 * images.mean(1, keepdim=True)  # any callable images -> metres


def _run(kind, batch, seed=0):
    opts = {"predictor": _toy_predictor} if kind == "predicted_depth" else {}
    return make_fakes(kind, *batch, seed=seed, **opts)


def test_registry(batch):
    assert set(TRAIN_FAKES) == {"swap_depth", "predicted_depth", "insert_region", "shift_scale_depth"}
    assert set(TEST_ONLY_FAKES) == {"zero_depth", "down_up_sample", "jpeg_degrade", "rendered"}
    assert not set(TRAIN_FAKES) & set(TEST_ONLY_FAKES) and set(FAKES) == set(TRAIN_FAKES) | set(TEST_ONLY_FAKES)
    with pytest.raises(InputError, match="unknown fake"):
        make_fakes("nope", *batch)


@pytest.mark.parametrize("kind", list(FAKES))
def test_shapes_dtypes_consistency_and_inputs_untouched(kind, batch):
    before = [t.clone() for t in batch]
    img, dep, val = _run(kind, batch)
    for a, b in zip(before, batch):
        assert torch.equal(a, b)  # never modified in place
    assert img.shape == (B, 3, H, W) and img.dtype == torch.float32
    assert dep.shape == (B, 1, H, W) and dep.dtype == torch.float32
    assert val.shape == (B, 1, H, W) and val.dtype == torch.bool
    assert img.min() >= 0 and img.max() <= 1 and torch.isfinite(dep).all()
    assert torch.equal(val, dep > 0)  # depth is positive exactly where valid


@pytest.mark.parametrize("kind", list(FAKES))
def test_determinism(kind, batch):
    a, b = _run(kind, batch, seed=3), _run(kind, batch, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = _run(kind, batch, seed=4)
    same = all(torch.equal(x, y) for x, y in zip(a, c))
    assert same == (kind not in RANDOM_FAKES)


def test_swap_depth(batch):
    image, depth, valid = batch
    img, dep, val = swap_depth(*batch, seed=5)
    assert torch.equal(img, image)
    for i in range(B):
        assert not torch.equal(dep[i], depth[i])
        src = [j for j in range(B) if torch.equal(dep[i], depth[j])]
        assert len(src) == 1 and src[0] != i and torch.equal(val[i], valid[src[0]])
    groups = ["a", "a", "b", "b", "c", "c"]
    _, dep_g, _ = swap_depth(*batch, seed=5, groups=groups)
    for i in range(B):
        j = next(j for j in range(B) if torch.equal(dep_g[i], depth[j]))
        assert groups[j] != groups[i]
    with pytest.raises(InputError, match="at least 2"):
        swap_depth(image[:1], depth[:1], valid[:1])
    with pytest.raises(InputError, match="one group"):
        swap_depth(*batch, groups=["a"] * 4 + ["b", "c"])


def test_derangement_has_no_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 50):
        for _ in range(20):
            p = derangement(n, g)
            assert sorted(p.tolist()) == list(range(n)) and (p != torch.arange(n)).all()


def test_insert_region_changes_only_the_rectangle(batch):
    image, depth, valid = batch
    img, dep, val = insert_region(*batch, seed=9)
    boxes = insert_region_boxes(B, H, W, seed=9)
    for i, (j, sy, sx, dy, dx, h, w) in enumerate(boxes.tolist()):
        assert j != i and 0.2 * H - 1 <= h <= 0.5 * H + 1 and 0.2 * W - 1 <= w <= 0.5 * W + 1
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[dy:dy + h, dx:dx + w] = True
        for out, src in ((img, image), (dep, depth), (val, valid)):
            assert torch.equal(out[i][:, ~inside], src[i][:, ~inside])  # outside: untouched
            assert torch.equal(out[i][:, dy:dy + h, dx:dx + w], src[j][:, sy:sy + h, sx:sx + w])  # inside: donor
        assert not torch.equal(img[i], image[i])


def _shift_np(x, dy, dx):
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_shift_scale_depth_is_a_shift_and_or_scale(batch):
    image, depth, valid = batch
    img, dep, val = shift_scale_depth(*batch, seed=2)
    assert torch.equal(img, image)
    kinds = set()
    for i in range(B):
        d_in, d_out = depth[i, 0].double().numpy(), dep[i, 0].double().numpy()
        found = None
        for dy in range(-int(0.12 * H) - 1, int(0.12 * H) + 2):  # search all shifts by brute force
            for dx in range(-int(0.12 * W) - 1, int(0.12 * W) + 2):
                ref = _shift_np(d_in, dy, dx)
                if not np.array_equal(ref > 0, d_out > 0):
                    continue
                ratio = d_out[ref > 0] / ref[ref > 0]
                if np.allclose(ratio, ratio[0], rtol=1e-5):
                    found = (dy, dx, float(ratio[0]))
        assert found is not None, f"frame {i} is not a shifted/scaled copy"
        dy, dx, s = found
        assert (dy, dx) != (0, 0) or abs(s - 1) > 0.1
        if (dy, dx) != (0, 0):
            assert max(abs(dy) / H, abs(dx) / W) >= 0.03 - 1 / W
        if abs(s - 1) > 1e-6:
            assert 0.6 - 1e-6 <= s <= 0.85 + 1e-6 or 1 / 0.85 - 1e-6 <= s <= 1 / 0.6 + 1e-6
        kinds.add(("shift" if (dy, dx) != (0, 0) else "") + ("scale" if abs(s - 1) > 1e-6 else ""))
    assert len(kinds) >= 2  # the modes are mixed


def test_predicted_depth(batch):
    image, depth, valid = batch
    img, dep, val = predicted_depth(*batch, predictor=_toy_predictor)
    assert torch.equal(img, image) and torch.equal(val, valid & (dep > 0)) and torch.equal(val, valid)
    raw = _toy_predictor(image)
    for i in range(B):
        # match_scale: the prediction times one factor, which aligns the medians.
        r = dep[i][val[i]] / raw[i][val[i]]
        assert torch.allclose(r, r[0].expand_as(r), rtol=1e-5)
        assert torch.isclose(dep[i][val[i]].median(), depth[i][valid[i]].median(), rtol=1e-4)
    i2, d2, v2 = predicted_depth(image, predictor=_toy_predictor)
    assert v2.all() and torch.allclose(d2, raw)
    with pytest.raises(InputError, match="predictor"):
        make_fakes("predicted_depth", *batch)
    with pytest.raises(InputError, match="shape"):
        predicted_depth(*batch, predictor=lambda x: x)


def test_zero_depth(batch):
    image, _, _ = batch
    img, dep, val = zero_depth(*batch)
    assert torch.equal(img, image) and (dep == 0).all() and not val.any()


def test_down_up_sample_blocks(batch):
    image, depth, valid = batch
    img, dep, val = down_up_sample(*batch, factor=4)
    ys = (torch.arange(H) // 4) * 4
    xs = (torch.arange(W) // 4) * 4
    # Nearest down then up: each pixel takes the value of its 4x4 block's top-left pixel.
    assert torch.equal(img, image[:, :, ys][:, :, :, xs])
    assert torch.equal(dep, depth[:, :, ys][:, :, :, xs])
    assert torch.equal(val, valid[:, :, ys][:, :, :, xs])


def _pil_jpeg(arr, quality):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def test_jpeg_degrade_matches_pillow(batch):
    image, depth, valid = batch
    img, dep, val = jpeg_degrade(*batch, quality=10)
    diff = (img - image).abs().mean().item()
    assert 0.005 < diff < 0.15  # visibly degraded, still the same picture
    assert not (val & ~valid).any()  # holes stay holes
    for i in range(B):
        u8 = np.round(image[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        np.testing.assert_allclose(img[i].permute(1, 2, 0).numpy(), _pil_jpeg(u8, 10) / 255.0, atol=1e-6)
        # Depth by hand: codes 1..255 over the valid range, 0 = invalid, grey JPEG, back.
        d, v = depth[i, 0].double().numpy(), valid[i, 0].numpy()
        lo, hi = d[v].min(), d[v].max()
        code = np.where(v, 1 + np.round((d - lo) / (hi - lo) * 254), 0).astype(np.uint8)
        dec = _pil_jpeg(code, 10).astype(np.float64)
        ok = v & (dec >= 1)
        assert np.array_equal(val[i, 0].numpy(), ok)
        np.testing.assert_allclose(dep[i, 0].numpy()[ok], (lo + (dec - 1) / 254 * (hi - lo))[ok], rtol=1e-5)
        assert np.median(np.abs(dep[i, 0].numpy()[ok] - d[ok])) < 0.15 * (hi - lo)
    with pytest.raises(InputError):
        jpeg_degrade(*batch, quality=0)


def test_rendered_matches_simulator(batch):
    img, dep, val = rendered(*batch, seed=4)
    s = simulate_scenes(B, size=(H, W), seed=4)
    assert torch.equal(img, s.image) and torch.equal(dep, s.depth) and val.all()


def test_bad_batches(batch):
    image, depth, valid = batch
    bad = depth.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        swap_depth(image, bad, valid)
    with pytest.raises(InputError, match="bool"):
        swap_depth(image, depth, valid.float())
    with pytest.raises(InputError, match="shape"):
        swap_depth(image, depth[:, :, :-1], valid)
    leaky = depth.clone()
    leaky[~valid] = 1.0
    with pytest.raises(InputError, match="depth \\* valid"):
        zero_depth(image, leaky, valid)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        zero_depth(image * 255, depth, valid)
    with pytest.raises(InputError, match="seed"):
        swap_depth(*batch, seed=1.5)


def test_fakes_on_real_frames():
    root = require_data("rgbd")
    frames = load_real_frames(root, scenes=["open3d", "nyu", "box-scene"], limit_per_scene=2, size=(48, 64))
    real = stack_frames(frames)
    for kind in FAKES:
        img, dep, val = _run(kind, real, seed=1)
        assert torch.equal(val, dep > 0) and img.shape == real[0].shape


# ----------------------------------------------------------------------------------- regressor
def test_depth_regressor_trains_and_round_trips(tmp_path, batch):
    s = simulate_scenes(24, size=(32, 32), seed=5)
    frames = (s.sensor_image, s.sensor_depth, s.sensor_valid)
    model = train_depth_regressor(frames, epochs=4, seed=0, size=(32, 32), batch_size=8, width=8, lr=5e-3)
    assert len(model.history) == 4 and model.history[-1] < model.history[0]
    again = train_depth_regressor(frames, epochs=4, seed=0, size=(32, 32), batch_size=8, width=8, lr=5e-3)
    x = s.sensor_image[:3]
    assert torch.equal(model.predict(x), again.predict(x))  # deterministic per seed
    pred = model.predict(batch[0])  # any size: padded internally
    assert pred.shape == (B, 1, H, W) and pred.min() >= 0.1 - 1e-5 and pred.max() <= 10 + 1e-4
    path = save_depth_regressor(model, tmp_path / "reg.safetensors")
    loaded = load_depth_regressor(path)
    assert torch.equal(loaded.predict(x), model.predict(x))
    # It plugs into the fake as the predictor.
    img, dep, val = predicted_depth(*batch, predictor=loaded)
    assert torch.equal(val, batch[2])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_depth_regressor(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError):
        load_depth_regressor(tmp_path / "missing.safetensors")
    assert isinstance(loaded, DepthRegressor)


# ------------------------------------------------------------------------------------- patches
def test_encode_depth_inverse_and_linear(batch):
    _, depth, valid = batch
    x = encode_depth(depth, valid)
    assert x.min() >= 0 and x.max() <= 1 and torch.equal(x > 0, valid)
    d = depth[valid]
    assert torch.allclose(x[valid], 0.25 / d.clamp(0.25, 10.0))  # by hand: near / depth
    lin = encode_depth(depth, valid, "linear")
    assert torch.allclose(lin[valid], d.clamp(0.25, 10.0) / 10.0)
    back, v = decode_depth(x)
    assert torch.equal(v, valid) and torch.allclose(back[valid], d.clamp(0.25, 10.0), rtol=1e-5)
    with pytest.raises(InputError):
        encode_depth(depth, valid, "log")


def test_to_network_input(batch):
    image, depth, valid = batch
    x = to_network_input(*batch)
    assert x.shape == (B, 4, H, W) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x[:, :3], image)


def test_tiling_covers_the_frame(batch):
    pos = patch_positions(H, W, 16, 12)
    assert pos[0] == (0, 0) and pos[-1] == (H - 16, W - 16)
    img_p, dep_p, val_p, index = tile_rgbd(*batch, size=16, stride=12)
    assert img_p.shape == (B * len(pos), 3, 16, 16) and index.shape == (B * len(pos), 3)
    k = 7
    b, y, x = index[k].tolist()
    assert torch.equal(img_p[k], batch[0][b, :, y:y + 16, x:x + 16])
    assert torch.equal(dep_p[k], batch[1][b, :, y:y + 16, x:x + 16])
    covered = torch.zeros(H, W, dtype=torch.bool)
    for y, x in pos:
        covered[y:y + 16, x:x + 16] = True
    assert covered.all()
    with pytest.raises(InputError):
        tile(batch[0], size=H + 1)


def test_augment_real_keeps_depth_values(batch):
    image, depth, valid = batch
    img, dep, val = augment_real(*batch, seed=1, crop=(24, 32))
    assert img.shape == (B, 3, 24, 32) and dep.shape == (B, 1, 24, 32)
    assert img.min() >= 0 and img.max() <= 1
    for i in range(B):
        # The depth crop appears, flipped or not, somewhere in the original map: values untouched.
        ok = False
        for d in (dep[i], dep[i].flip(-1)):
            for y in range(H - 24 + 1):
                for x in range(W - 32 + 1):
                    if torch.equal(d, depth[i, :, y:y + 24, x:x + 32]):
                        ok = True
        assert ok
    again = augment_real(*batch, seed=1, crop=(24, 32))
    assert all(torch.equal(a, b) for a, b in zip((img, dep, val), again))
    plain = augment_real(*batch, seed=1, flip=False, brightness=0, contrast=0, saturation=0, gamma=0)
    assert torch.allclose(plain[0], image, atol=1e-6) and torch.equal(plain[1], depth)


def test_sensor_holes_only_remove_readings_and_shadow_depth_edges(batch):
    from safetynet.sceneproof.patches import sensor_holes

    _, depth, valid = batch
    dep, val = sensor_holes(depth, valid, seed=3, p=1.0)
    assert dep.shape == depth.shape and val.dtype == torch.bool
    assert not (val & ~valid).any()  # never invents a reading
    assert torch.equal(dep, depth * val)  # kept readings keep their values, dropped ones are 0
    assert (val.sum((1, 2, 3)) < valid.sum((1, 2, 3))).all()  # p=1: every frame loses some
    again = sensor_holes(depth, valid, seed=3, p=1.0)
    assert torch.equal(again[0], dep) and torch.equal(again[1], val)
    assert not torch.equal(sensor_holes(depth, valid, seed=4, p=1.0)[1], val)
    d0, v0 = sensor_holes(depth, valid, seed=3, p=0.0)
    assert torch.equal(v0, valid) and torch.equal(d0, depth * valid)

    # a depth step (1 m | 3 m): with blobs and speckle off, only a band around the step goes
    step = torch.ones(6, 1, 20, 30)
    step[..., 15:] = 3.0
    ones = torch.ones_like(step, dtype=torch.bool)
    _, v = sensor_holes(step, ones, seed=0, p=1.0, max_blobs=0, max_speckle=0.0, max_edge_width=3)
    lost = ~v
    assert not lost[..., :11].any() and not lost[..., 19:].any()  # nothing far from the step
    assert lost[..., 14:16].any()  # and the step itself is shadowed in some frame
    with pytest.raises(InputError, match="p must be"):
        sensor_holes(depth, valid, p=1.5)


def test_training_patches_camera_variation_is_label_neutral_and_seeded():
    from safetynet.sceneproof.frames import FrameSet
    from safetynet.sceneproof.patches import decode_depth
    from safetynet.sceneproof.sampling import training_patches

    s = simulate_scenes(8, size=(48, 64), seed=2, views_per_scene=2)
    frames = s.frames(sensor=True)
    fs = FrameSet.from_frames(frames)
    kinds = ("swap_depth", "shift_scale_depth")
    kw = dict(patch=32, rounds=2, seed=5)
    base = training_patches(fs, 40, 40, kinds, **kw)
    varied = training_patches(fs, 40, 40, kinds, zoom=0.3, depth_jitter=0.1, **kw)
    again = training_patches(fs, 40, 40, kinds, zoom=0.3, depth_jitter=0.1, **kw)
    assert torch.equal(varied.x, again.x)  # deterministic by seed
    assert varied.counts() == base.counts()  # same class balance: applied to both classes alike
    assert not torch.equal(varied.x, base.x)
    # depth jitter only: every real patch's depth is the plain one times a per-frame factor in [1/1.1, 1.1]
    jit = training_patches(fs, 40, 40, kinds, depth_jitter=0.1, **kw)
    real = base.y == 1
    d0, v0 = decode_depth(base.x[real, 3:].float())
    d1, v1 = decode_depth(jit.x[real, 3:].float())
    assert torch.equal(v0, v1)
    inner = v0 & (d0 > 0.4) & (d0 < 6) & (d1 > 0.4) & (d1 < 6)  # away from the encoding's clamps
    ratio = d1[inner] / d0[inner]
    assert float(ratio.min()) > 1 / 1.1 - 0.01 and float(ratio.max()) < 1.1 + 0.01
    assert float((ratio - 1).abs().max()) > 0.01
    with pytest.raises(InputError, match="zoom"):
        training_patches(fs, 40, 40, kinds, zoom=1.2, **kw)
