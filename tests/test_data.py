"""Data loaders: the three CIFAR-10 forms, the restricted unpickler, errors, the cache, the
embedded sample, the opt-in download and the digits split.

Small files in each official format are written here from random pixels, so the loaders are
checked against arrays we know; the real data (``cifar10_dir``) is checked for its published counts.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from safetynet import cli
from safetynet.exit_codes import EXIT_BAD_INPUT
from safetynet.data import CLASSES, load_binary, load_cifar10, load_dataset, load_digits, load_folder, load_python
from safetynet.data import cifar10 as cifar10_mod
from safetynet.data import download as dl
from safetynet.data.sample import SAMPLE_FILE, load_sample
from safetynet.errors import DataError, InputError

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PATH = REPO / "src" / "safetynet" / "data" / "assets" / SAMPLE_FILE


# ----------------------------------------------------------------------------- writers in the official formats
def _random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 10  # every class present
    rng.shuffle(labels)
    return images, labels


def _fake_cifar(n_train: int = 50, n_test: int = 20):
    return _random_split(n_train, 1), _random_split(n_test, 2)


def _batches(images: np.ndarray, labels: np.ndarray, k: int):
    parts = np.array_split(np.arange(len(labels)), k)
    return [(images[p], labels[p]) for p in parts]


def write_bin(root: Path, train, test) -> Path:
    """``cifar-10-batches-bin``: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    for name, (x, y) in zip(names + ["test_batch.bin"], _batches(*train, 5) + [test]):
        rec = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(y), 3072)], axis=1)
        (d / name).write_bytes(rec.tobytes())
    (d / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    return d


def write_py(root: Path, train, test, protocol: int = 2) -> Path:
    """``cifar-10-batches-py``: pickled dicts with bytes keys, as the official (Python 2) files."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    for name, (x, y) in zip(names + ["test_batch"], _batches(*train, 5) + [test]):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.reshape(len(y), 3072).copy(), b"filenames": [f"img_{i}.png".encode() for i in range(len(y))]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f, protocol=2)
    return d


def write_folder(root: Path, train, test, classes=CLASSES) -> Path:
    """``<split>/<class>/NNNN.png``; returns the images in loader order (class, then file name)."""
    for split, (x, y) in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(img.transpose(1, 2, 0)).save(root / split / classes[label] / f"{i:04d}.png")
    return root


def _folder_order(x: np.ndarray, y: np.ndarray):
    # the loader reads class by class, files sorted by name (= original index here)
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("split", ["train", "test"])
def test_binary_round_trip(tmp_path, split):
    train, test = _fake_cifar()
    d = write_bin(tmp_path, train, test)
    x, y = train if split == "train" else test
    for ds in (load_binary(tmp_path, split), load_binary(d, split), load_cifar10(tmp_path, split)):
        assert torch.equal(ds.images_u8, torch.from_numpy(x))
        assert torch.equal(ds.labels, torch.from_numpy(y))
        assert ds.labels.dtype == torch.int64 and ds.classes == CLASSES
    # byte layout, read by hand from the first record: label, then the R, G, B planes row by row
    raw = (d / ("data_batch_1.bin" if split == "train" else "test_batch.bin")).read_bytes()
    ds = load_binary(tmp_path, split)
    assert ds.labels[0] == raw[0]
    assert ds.images_u8[0, 0, 0, 0] == raw[1]  # R (0, 0)
    assert ds.images_u8[0, 0, 0, 1] == raw[2]  # R (0, 1)
    assert ds.images_u8[0, 0, 1, 0] == raw[1 + 32]  # R (1, 0)
    assert ds.images_u8[0, 1, 0, 0] == raw[1 + 1024]  # G (0, 0)
    assert ds.images_u8[0, 2, 31, 31] == raw[3072]  # B (31, 31)
    assert ds.images.dtype == torch.float32
    assert torch.allclose(ds.images, torch.from_numpy(x).float() / 255)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_python_round_trip(tmp_path, protocol):
    train, test = _fake_cifar()
    write_py(tmp_path, train, test, protocol=protocol)
    for split, (x, y) in (("train", train), ("test", test)):
        for ds in (load_python(tmp_path, split), load_python(tmp_path / "cifar-10-batches-py", split),
                   load_cifar10(tmp_path, split)):
            assert torch.equal(ds.images_u8, torch.from_numpy(x))
            assert torch.equal(ds.labels, torch.from_numpy(y))


def test_folder_round_trip_png(tmp_path):
    train, test = _fake_cifar()
    write_folder(tmp_path, train, test)
    for split, (x, y) in (("train", train), ("test", test)):
        xs, ys = _folder_order(x, y)
        ds = load_cifar10(tmp_path, split, cache_dir=tmp_path / "cache")
        assert torch.equal(ds.images_u8, torch.from_numpy(xs))
        assert torch.equal(ds.labels, torch.from_numpy(ys))
        assert ds.classes == CLASSES


def test_three_forms_agree(tmp_path):
    train, test = _fake_cifar(n_train=30, n_test=10)
    write_bin(tmp_path / "b", train, test)
    write_py(tmp_path / "p", train, test)
    write_folder(tmp_path / "f", train, test)
    a, b = load_cifar10(tmp_path / "b", "test"), load_cifar10(tmp_path / "p", "test")
    c = load_cifar10(tmp_path / "f", "test", cache_dir=tmp_path / "cache")
    assert torch.equal(a.images_u8, b.images_u8) and torch.equal(a.labels, b.labels)
    order = torch.from_numpy(np.argsort(a.labels.numpy(), kind="stable"))
    assert torch.equal(a.images_u8[order], c.images_u8) and torch.equal(a.labels[order], c.labels)


# ----------------------------------------------------------------------------- the restricted unpickler
class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(f"touch {marker}"), b"labels": [0]}, protocol=2)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match="refusing .*system"):
        load_python(tmp_path, "test")
    with pytest.raises(DataError, match="refusing"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()
    # control: the payload is live, so the refusal above is what kept it from running
    pickle.loads(payload)
    assert marker.exists()


def test_pickled_class_instance_is_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Path("/etc/passwd"), b"labels": []}))
    with pytest.raises(DataError, match="refusing .*Path"):
        load_python(tmp_path, "test")


# ----------------------------------------------------------------------------- clear errors
def _py_batch(tmp_path: Path, batch: object) -> Path:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    return tmp_path


def _good_py_batch(n: int = 4) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": [0] * n}


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("a_file", "not a directory"),
    ("unknown_layout", "unknown CIFAR-10 layout"),
    ("bin_truncated", "not a multiple"),
    ("bin_empty", "not a multiple"),
    ("bin_label_10", "label 10 outside"),
    ("bin_missing_train_batch", "missing CIFAR-10 file"),
    ("py_truncated", "corrupt CIFAR-10 file"),
    ("py_not_a_dict", "expected a dict"),
    ("py_float_data", "uint8 array"),
    ("py_wrong_width", "uint8 array"),
    ("py_label_count", "list of 4 ints"),
    ("py_label_strings", "list of ints"),
    ("py_label_range", "outside 0..9"),
    ("folder_nine_classes", "9 class folders"),
    ("folder_wrong_names", "expected 10"),
    ("folder_empty_class", "without images"),
    ("folder_wrong_size", "16x16, expected 32x32"),
    ("folder_corrupt_image", "corrupt image"),
    ("folder_missing_split", "missing folder"),
    ("folder_no_classes", "no class folders"),
])
def test_clear_data_errors(tmp_path, case, match):
    root = tmp_path / "cifar"
    root.mkdir()
    split = "test"
    if case == "missing":
        root = tmp_path / "nope"
    elif case == "a_file":
        root = tmp_path / "file.bin"
        root.write_bytes(b"x")
    elif case == "unknown_layout":
        (root / "readme.txt").write_text("hello")
    elif case.startswith("bin_"):
        d = root / "cifar-10-batches-bin"
        d.mkdir()
        rec = np.zeros((3, 3073), np.uint8)
        if case == "bin_truncated":
            (d / "test_batch.bin").write_bytes(rec.tobytes()[:-10])
        elif case == "bin_empty":
            (d / "test_batch.bin").write_bytes(b"")
        elif case == "bin_label_10":
            rec[1, 0] = 10
            (d / "test_batch.bin").write_bytes(rec.tobytes())
        else:
            (d / "test_batch.bin").write_bytes(rec.tobytes())
            split = "train"
    elif case == "py_truncated":
        _py_batch(root, _good_py_batch())
        p = root / "cifar-10-batches-py" / "test_batch"
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    elif case == "py_not_a_dict":
        _py_batch(root, [1, 2, 3])
    elif case == "py_float_data":
        _py_batch(root, {b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4})
    elif case == "py_wrong_width":
        _py_batch(root, {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4})
    elif case == "py_label_count":
        _py_batch(root, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3})
    elif case == "py_label_strings":
        _py_batch(root, {b"data": np.zeros((4, 3072), np.uint8), b"labels": ["cat"] * 4})
    elif case == "py_label_range":
        _py_batch(root, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 11]})
    else:  # folder form
        train, test = _fake_cifar(n_train=10, n_test=10)
        write_folder(root, train, test)
        t = root / "test"
        if case == "folder_nine_classes":
            for f in (t / "truck").iterdir():
                f.unlink()
            (t / "truck").rmdir()
        elif case == "folder_wrong_names":
            (t / "truck").rename(t / "lorry")
        elif case == "folder_empty_class":
            for f in (t / "cat").iterdir():
                f.unlink()
        elif case == "folder_wrong_size":
            Image.new("RGB", (16, 16)).save(t / "dog" / "9999.png")
        elif case == "folder_corrupt_image":
            (t / "dog" / "9999.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
        elif case == "folder_missing_split":
            (root / "train").rename(root / "training")
            split = "train"
        elif case == "folder_no_classes":
            for c in CLASSES:
                for f in (t / c).iterdir():
                    f.unlink()
                (t / c).rmdir()
    with pytest.raises(DataError, match=match):
        load_cifar10(root, split, cache_dir=tmp_path / "cache")


def test_garbage_python_batches_are_data_errors(tmp_path):
    """Random bytes after a pickle header make the unpickler fail in many ways (MemoryError on a
    huge length, IndexError, ...): each must come out as the loader's own DataError. Seeded."""
    root = _py_batch(tmp_path, _good_py_batch())
    p = root / "cifar-10-batches-py" / "test_batch"
    rng = np.random.default_rng(0)
    for _ in range(300):
        p.write_bytes(b"\x80\x02" + rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes())
        with pytest.raises(DataError, match="CIFAR-10 file"):
            load_cifar10(root, "test", cache_dir=tmp_path / "cache")


def test_bad_split_is_an_input_error(tmp_path):
    write_bin(tmp_path, *_fake_cifar(10, 10))
    with pytest.raises(InputError, match="split"):
        load_cifar10(tmp_path, "validation")
    with pytest.raises(InputError, match="data-dir"):
        load_dataset("cifar10", "test")
    with pytest.raises(InputError, match="unknown data set"):
        load_dataset("imagenet", "test")


def test_cli_reports_data_error_in_one_line(tmp_path, capsys):
    rc = cli.main(["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_BAD_INPUT
    assert err.startswith("safetynet: error:") and "does not exist" in err and "\n" not in err


# ----------------------------------------------------------------------------- the decoded-array cache
def _cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npz"))


def test_cache_is_used_on_second_load(tmp_path, monkeypatch):
    train, test = _fake_cifar(n_train=20, n_test=20)
    write_folder(tmp_path / "data", train, test)
    cache = tmp_path / "cache"
    first = load_folder(tmp_path / "data", "test", cache_dir=cache)
    assert len(_cache_files(cache)) == 1

    def no_decode(*_a, **_k):
        raise AssertionError("decoded again although a valid cache exists")

    monkeypatch.setattr(cifar10_mod, "_decode_folder", no_decode)
    second = load_folder(tmp_path / "data", "test", cache_dir=cache)
    assert torch.equal(first.images_u8, second.images_u8) and torch.equal(first.labels, second.labels)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong_dtype", "missing_key"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    train, test = _fake_cifar(n_train=20, n_test=20)
    write_folder(tmp_path / "data", train, test)
    cache = tmp_path / "cache"
    first = load_folder(tmp_path / "data", "test", cache_dir=cache)
    (path,) = _cache_files(cache)
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong_dtype":
        np.savez(path, images=np.zeros((20, 3, 32, 32), np.float32), labels=np.zeros(20, np.int64))
    else:
        np.savez(path, images=first.images_u8.numpy())
    again = load_folder(tmp_path / "data", "test", cache_dir=cache)
    assert torch.equal(first.images_u8, again.images_u8) and torch.equal(first.labels, again.labels)
    with np.load(path, allow_pickle=False) as z:  # rewritten as a valid cache
        assert np.array_equal(z["images"], first.images_u8.numpy())


def test_cache_follows_changed_files(tmp_path):
    train, test = _fake_cifar(n_train=20, n_test=20)
    write_folder(tmp_path / "data", train, test)
    cache = tmp_path / "cache"
    load_folder(tmp_path / "data", "test", cache_dir=cache)
    victim = sorted((tmp_path / "data" / "test" / "airplane").iterdir())[0]
    Image.new("RGB", (32, 32), (7, 8, 9)).save(victim)
    ds = load_folder(tmp_path / "data", "test", cache_dir=cache)
    assert ds.images_u8[0, :, 0, 0].tolist() == [7, 8, 9]


def test_real_cache_second_load_decodes_nothing(cifar10_dir, tmp_path, monkeypatch):
    """The second load of the real data comes from the cache: no JPEG is decoded (behaviour, not a timing)."""
    import safetynet.data.cifar10 as cifar10_module

    first = load_cifar10(cifar10_dir, "test", cache_dir=tmp_path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cached load decoded images again")

    monkeypatch.setattr(cifar10_module, "_decode_folder", no_decoding)
    second = load_cifar10(cifar10_dir, "test", cache_dir=tmp_path)
    assert torch.equal(first.images_u8, second.images_u8) and torch.equal(first.labels, second.labels)


# ----------------------------------------------------------------------------- the real data
@pytest.mark.parametrize("split, n", [("train", 5000), ("test", 1000)])
def test_real_cifar10_counts_and_range(cifar10_dir, split, n):
    ds = load_cifar10(cifar10_dir, split)
    assert len(ds) == 10 * n
    assert ds.images_u8.shape == (10 * n, 3, 32, 32)
    assert ds.classes == CLASSES
    assert ds.labels.bincount(minlength=10).tolist() == [n] * 10
    x = ds.images
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0
    # the first image of each class is that class's first file, decoded independently with Pillow
    for c, name in enumerate(CLASSES):
        path = sorted((cifar10_dir / split / name).iterdir())[0]
        ref = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(ds.images_u8[c * n].numpy(), ref)


# ----------------------------------------------------------------------------- the embedded sample
def test_sample_shape_and_classes():
    ds = load_sample()
    assert ds.images_u8.shape == (1000, 3, 32, 32) and ds.images_u8.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    assert ds.classes == CLASSES
    assert torch.equal(ds.labels, torch.arange(10).repeat_interleave(100))
    assert torch.equal(load_dataset("cifar10-sample", "test").images_u8, ds.images_u8)
    with pytest.raises(InputError, match="test images only"):
        load_dataset("cifar10-sample", "train")


def test_sample_file_is_small_and_packaged():
    size = SAMPLE_PATH.stat().st_size
    assert 1_000_000 < size < 4_000_000, size
    with np.load(SAMPLE_PATH, allow_pickle=False) as z:
        assert sorted(z.files) == ["images", "labels"]
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["safetynet"]
    rel = SAMPLE_PATH.relative_to(REPO / "src" / "safetynet").as_posix()
    assert any(fnmatch.fnmatch(rel, g) for g in globs), (rel, globs)


def test_sample_equals_the_shared_images(cifar10_dir):
    ds = load_sample()
    for c, name in enumerate(CLASSES):
        files = sorted((cifar10_dir / "test" / name).iterdir())[:100]
        ref = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]).transpose(0, 3, 1, 2)
        assert np.array_equal(ds.images_u8[c * 100:(c + 1) * 100].numpy(), ref), name


def test_make_sample_script_rebuilds_it(tmp_path):
    """The script picks the first ``per_class`` test images of each class, class by class."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" / "make_cifar10_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    train, test = _fake_cifar(n_train=10, n_test=40)
    write_bin(tmp_path / "c", train, test)
    out = tmp_path / "s.npz"
    assert mod.main([str(tmp_path / "c"), "--out", str(out), "--per-class", "3"]) == 0
    x, y = test
    want = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(10)])
    with np.load(out, allow_pickle=False) as z:
        assert np.array_equal(z["images"], x[want]) and np.array_equal(z["labels"], y[want])
        assert z["labels"].dtype == np.int64


# ----------------------------------------------------------------------------- download (offline, faked)
class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _tarball(tmp_path: Path, form: str, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> tuple[bytes, tuple]:
    train, test = _fake_cifar(n_train=25, n_test=10)
    src = tmp_path / f"src-{form}"
    folder = (write_bin if form == "bin" else write_py)(src, train, test)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue(), (train, test)


@pytest.fixture
def fake_server(monkeypatch):
    """Serve ``payloads[url]`` to the downloader; record the URLs asked for."""
    state = {"payloads": {}, "calls": []}

    def urlopen(url, timeout=None):
        state["calls"].append(url)
        if url not in state["payloads"]:
            raise urllib.error.URLError("Name or service not known")
        return _FakeResponse(state["payloads"][url])

    monkeypatch.setattr(dl, "_urlopen", urlopen)
    return state


def test_official_sources_are_pinned():
    assert dl.SOURCES["bin"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert dl.SOURCES["bin"].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert dl.SOURCES["py"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert dl.SOURCES["py"].md5 == "c58f30108f718f92721af3b95e74349a"


@pytest.mark.parametrize("form", ["bin", "py"])
def test_download_good_checksum_via_cli(tmp_path, monkeypatch, fake_server, form, capsys):
    payload, (train, test) = _tarball(tmp_path, form)
    official = dl.SOURCES[form]
    fake_server["payloads"][official.url] = payload
    monkeypatch.setitem(dl.SOURCES, form, dl.Source(official.url, hashlib.md5(payload).hexdigest(),
                                                    official.folder, official.files))
    dest = tmp_path / "dest"
    rc = cli.main(["data", "download", "cifar10", "--out", str(dest), "--form", form,
                   "--sha256", hashlib.sha256(payload).hexdigest(), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(dest / official.folder)
    assert fake_server["calls"] == [official.url]
    assert sorted(p.name for p in dest.iterdir()) == [official.folder]  # no temp files left
    for split, (x, y) in (("train", train), ("test", test)):
        ds = load_cifar10(dest, split)
        assert torch.equal(ds.images_u8, torch.from_numpy(x)) and torch.equal(ds.labels, torch.from_numpy(y))
    # a second call finds the folder and does not download again
    assert dl.download_cifar10(dest, form) == dest / official.folder
    assert len(fake_server["calls"]) == 1


@pytest.mark.parametrize("pre_existing", [False, True])
def test_download_checksum_mismatch_leaves_nothing(tmp_path, fake_server, pre_existing):
    payload, _ = _tarball(tmp_path, "bin")
    url = "https://example.invalid/cifar.tar.gz"
    fake_server["payloads"][url] = payload
    dest = tmp_path / "dest"
    if pre_existing:
        dest.mkdir()
    src = dl.Source(url, "0" * 32, "cifar-10-batches-bin", dl.SOURCES["bin"].files)
    with pytest.raises(DataError, match="checksum mismatch .*md5"):
        dl.download_cifar10(dest, source=src)
    assert (list(dest.iterdir()) == []) if pre_existing else not dest.exists()
    # the right md5 but a wrong pinned sha256 is refused too
    src = dl.Source(url, hashlib.md5(payload).hexdigest(), "cifar-10-batches-bin", dl.SOURCES["bin"].files)
    with pytest.raises(DataError, match="checksum mismatch .*sha256"):
        dl.download_cifar10(dest, source=src, sha256="f" * 64)
    assert (list(dest.iterdir()) == []) if pre_existing else not dest.exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("member, match", [
    (("cifar-10-batches-bin/../../evil.txt",), "outside the target"),
    (("/tmp/safetynet-evil-abs.txt",), "outside the target"),
    (("cifar-10-batches-bin/link", tarfile.SYMTYPE, b"", "/etc/passwd"), "link or special"),
    (("cifar-10-batches-bin/hard", tarfile.LNKTYPE, b"", "/etc/passwd"), "link or special"),
    (("elsewhere.txt",), "not inside cifar-10-batches-bin"),
])
def test_download_rejects_unsafe_archives(tmp_path, fake_server, member, match):
    payload, _ = _tarball(tmp_path / "t", "bin", extra=[_member(*member)])
    url = "https://example.invalid/evil.tar.gz"
    fake_server["payloads"][url] = payload
    src = dl.Source(url, hashlib.md5(payload).hexdigest(), "cifar-10-batches-bin", dl.SOURCES["bin"].files)
    dest = tmp_path / "a" / "dest"
    with pytest.raises(DataError, match=match):
        dl.download_cifar10(dest, source=src)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/safetynet-evil-abs.txt").exists()


def test_download_incomplete_archive_and_network_error(tmp_path, fake_server):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info, data = _member("cifar-10-batches-bin/test_batch.bin", data=bytes(3073))
        tar.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    url = "https://example.invalid/partial.tar.gz"
    fake_server["payloads"][url] = payload
    src = dl.Source(url, hashlib.md5(payload).hexdigest(), "cifar-10-batches-bin", dl.SOURCES["bin"].files)
    with pytest.raises(DataError, match="lacks data_batch_1.bin"):
        dl.download_cifar10(tmp_path / "d1", source=src)
    assert not (tmp_path / "d1").exists()
    garbage = b"not a tarball" * 10
    fake_server["payloads"][url] = garbage
    src = dl.Source(url, hashlib.md5(garbage).hexdigest(), "cifar-10-batches-bin", dl.SOURCES["bin"].files)
    with pytest.raises(DataError, match="corrupt archive"):
        dl.download_cifar10(tmp_path / "d2", source=src)
    assert not (tmp_path / "d2").exists()
    with pytest.raises(DataError, match="could not download .*Name or service"):
        dl.download_cifar10(tmp_path / "d3", source=dl.Source("https://nowhere.invalid/x", "0" * 32, "f", ()))
    assert not (tmp_path / "d3").exists()
    with pytest.raises(InputError, match="form"):
        dl.download_cifar10(tmp_path / "d4", form="zip")


def test_loaders_never_download(tmp_path, fake_server):
    with pytest.raises(DataError):
        load_cifar10(tmp_path / "missing", "test")
    with pytest.raises(DataError):
        load_dataset("cifar10", "train", tmp_path)
    assert fake_server["calls"] == []


# ----------------------------------------------------------------------------- digits
def test_digits_split_is_a_partition():
    from sklearn.datasets import load_digits as sk_digits

    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 450  # 25 %, rounded up by scikit-learn
    assert train.images_u8.shape[1:] == (1, 8, 8) and train.classes == tuple("0123456789")
    bunch = sk_digits()
    full = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(1797, 64)
    full_rows = np.concatenate([full, bunch.target[:, None].astype(np.uint8)], axis=1)
    ours = np.concatenate([
        np.concatenate([s.images_u8.reshape(len(s), 64).numpy(), s.labels.numpy()[:, None].astype(np.uint8)], axis=1)
        for s in (train, test)
    ])
    # train + test is the whole data set, each image exactly once (sorted rows compare as multisets)
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    assert np.array_equal(key(ours), key(full_rows))
    # stratified: every class in both parts, in about the same proportion
    tr, te = train.labels.bincount(minlength=10), test.labels.bincount(minlength=10)
    assert (te > 0).all() and ((te.float() / (tr + te).float() - 0.25).abs() < 0.02).all()
    assert torch.equal(load_digits("test").images_u8, test.images_u8)  # deterministic


def test_cli_data_info_digits(capsys):
    assert cli.main(["data", "info", "--dataset", "digits", "--split", "test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 450 and sum(out["per_class"].values()) == 450 and out["image_shape"] == [1, 8, 8]
