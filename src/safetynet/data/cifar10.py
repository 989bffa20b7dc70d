"""CIFAR-10 loaders for the three common on-disk forms, with a compact ``.npz`` cache.

Forms (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-10-batches-bin``: records of 1 label byte + 3072 pixel bytes (R, G, B planes).
* ``cifar-10-batches-py``: pickled dicts. We never unpickle arbitrary objects: a restricted
  unpickler admits only numpy arrays, lists, dicts, bytes, str and int.
* an image-folder tree ``train/<class>/*.jpg|png`` and ``test/<class>/...``.

All loaders return :class:`ImageSet`, float images in [0, 1] (N, 3, 32, 32) and int64 labels.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .._io import save_npz_atomic
from ..errors import DataError, InputError

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
Split = Literal["train", "test"]
_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W) in memory; :meth:`float_images` gives [0, 1] floats."""

    images_u8: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images_u8.dtype != torch.uint8 or self.images_u8.ndim != 4:
            raise InputError(f"images_u8 must be uint8 (N, C, H, W), got {self.images_u8.dtype} {tuple(self.images_u8.shape)}")
        if self.labels.shape != (self.images_u8.shape[0],):
            raise InputError(f"labels shape {tuple(self.labels.shape)} does not match {self.images_u8.shape[0]} images")

    @property
    def images(self) -> torch.Tensor:
        """Float images in [0, 1], (N, C, H, W)."""
        return self.images_u8.float().div_(255.0)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor | slice) -> "ImageSet":
        return ImageSet(self.images_u8[index], self.labels[index], self.classes)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")


def detect_layout(root: Path) -> str:
    """Return 'bin', 'py' or 'folder' for a CIFAR-10 directory, or raise DataError."""
    if not root.exists():
        raise DataError(f"CIFAR-10 path {root} does not exist; pass the folder that holds the data (see `safetynet data download --help`)")
    if not root.is_dir():
        raise DataError(f"CIFAR-10 path {root} is not a directory")
    for cand in (root, root / "cifar-10-batches-bin"):
        if (cand / "data_batch_1.bin").exists() or (cand / "test_batch.bin").exists():
            return "bin"
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").exists() or (cand / "test_batch").exists():
            return "py"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder"
    raise DataError(
        f"unknown CIFAR-10 layout in {root}: expected cifar-10-batches-bin/*.bin, cifar-10-batches-py/*_batch*, "
        "or train/<class>/*.jpg and test/<class>/*.jpg"
    )


# ----------------------------------------------------------------------------- binary form
def _bin_dir(root: Path) -> Path:
    return root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root


def load_binary(root: str | os.PathLike[str], split: Split = "train") -> ImageSet:
    """Load the official binary version (``data_batch_{1..5}.bin``, ``test_batch.bin``)."""
    _check_split(split)
    d = _bin_dir(Path(root))
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    chunks = []
    for name in names:
        path = d / name
        if not path.exists():
            raise DataError(f"missing CIFAR-10 file {path}; the binary form needs {', '.join(names)}")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _RECORD:
            raise DataError(f"corrupt CIFAR-10 file {path}: {raw.size} bytes is not a multiple of the {_RECORD}-byte record")
        chunks.append(raw.reshape(-1, _RECORD))
    rec = np.concatenate(chunks)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() >= len(CLASSES):
        raise DataError(f"corrupt CIFAR-10 file in {d}: label {labels.max()} outside 0..9")
    images = rec[:, 1:].reshape(-1, 3, 32, 32)
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels), CLASSES)


# ----------------------------------------------------------------------------- python form
class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (as opposed to a merely broken file)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Admit only what CIFAR's python batches contain: numpy arrays and builtin containers.

    Anything else (``os.system``, arbitrary classes) is refused, so a crafted file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        # pickle protocol 5 (e.g. pickle.HIGHEST_PROTOCOL) stores arrays via np.frombuffer
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name}: only numpy arrays, lists, dicts, bytes, str and int are allowed")


def _restricted_load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"refusing CIFAR-10 file {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle stream fails in many ways, MemoryError included
        raise DataError(f"corrupt CIFAR-10 file {path}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR-10 file {path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_python(root: str | os.PathLike[str], split: Split = "train") -> ImageSet:
    """Load the official python version without unpickling arbitrary objects."""
    _check_split(split)
    root = Path(root)
    d = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = d / name
        if not path.exists():
            raise DataError(f"missing CIFAR-10 file {path}; the python form needs {', '.join(names)}")
        batch = _restricted_load(path)
        data, labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"corrupt CIFAR-10 file {path}: 'data' must be a uint8 array of shape (N, 3072)")
        if not isinstance(labels, list) or len(labels) != data.shape[0]:
            raise DataError(f"corrupt CIFAR-10 file {path}: 'labels' must be a list of {data.shape[0]} ints")
        try:
            ys.append(np.asarray(labels, dtype=np.int64))
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"corrupt CIFAR-10 file {path}: 'labels' must be a list of ints") from None
        xs.append(data.reshape(-1, 3, 32, 32))
    labels = np.concatenate(ys)
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise DataError(f"corrupt CIFAR-10 files in {d}: labels outside 0..9")
    return ImageSet(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(labels), CLASSES)


# ----------------------------------------------------------------------------- folder form
def _list_folder(split_dir: Path) -> tuple[list[str], list[list[Path]]]:
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir}; an image-folder data set needs train/<class>/ and test/<class>/")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders in {split_dir}; expected {split_dir}/<class>/*.jpg")
    files = [sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) for c in classes]
    return classes, files


def _decode_folder(files: list[list[Path]], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    from ..progress import progress

    n = sum(len(f) for f in files)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    i = 0
    with progress(total=n, desc="decoding images", unit="img") as bar:
        for label, paths in enumerate(files):
            for path in paths:
                try:
                    with Image.open(path) as im:
                        im = im.convert("RGB")
                        if im.size != (size, size):
                            raise DataError(f"image {path} is {im.size[0]}x{im.size[1]}, expected {size}x{size}")
                        images[i] = np.asarray(im)
                except (UnidentifiedImageError, OSError, SyntaxError) as e:
                    if isinstance(e, DataError):
                        raise
                    raise DataError(f"corrupt image {path}: {e}; delete or replace it") from None
                labels[i] = label
                i += 1
                bar.update(1)
    return images.transpose(0, 3, 1, 2).copy(), labels


def _folder_fingerprint(classes: list[str], files: list[list[Path]]) -> str:
    h = hashlib.sha256()
    for c, paths in zip(classes, files):
        h.update(c.encode())
        for p in paths:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where decoded arrays are cached: ``$SAFETYNET_CACHE`` or ``~/.cache/safetynet``."""
    env = os.environ.get("SAFETYNET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "safetynet"


def load_folder(
    root: str | os.PathLike[str],
    split: Split = "train",
    *,
    expected_classes: tuple[str, ...] | None = CLASSES,
    size: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> ImageSet:
    """Load an image-folder tree ``<root>/<split>/<class>/*.jpg``.

    The decoded arrays are cached once as ``.npz`` (keyed by file names, sizes and times), so a
    second load of the 50,000 training images takes well under a second instead of ~15 s.
    """
    _check_split(split)
    split_dir = Path(root) / split
    classes, files = _list_folder(split_dir)
    if expected_classes is not None and tuple(classes) != tuple(expected_classes):
        raise DataError(
            f"{split_dir} has {len(classes)} class folders {classes}, expected {len(expected_classes)}: {list(expected_classes)}"
        )
    empty = [c for c, f in zip(classes, files) if not f]
    if empty:
        raise DataError(f"class folders without images in {split_dir}: {empty}")
    cache = None
    if use_cache:
        key = _folder_fingerprint(classes, files)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache = cache / f"folder-{split}-{key}.npz"
        if cache.exists():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    return ImageSet(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), tuple(classes))
            except Exception:  # noqa: BLE001 - a broken cache (any failure) is rebuilt below, never trusted
                pass
    images, labels = _decode_folder(files, size)
    if cache is not None:
        try:
            save_npz_atomic(cache, compressed=False, images=images, labels=labels)
        except OSError:
            pass  # a read-only cache location only costs speed
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), tuple(classes))


def load_cifar10(
    root: str | os.PathLike[str],
    split: Split = "train",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageSet:
    """Load CIFAR-10 from ``root`` in whichever of the three forms it is stored."""
    layout = detect_layout(Path(root))
    if layout == "bin":
        ds = load_binary(root, split)
    elif layout == "py":
        ds = load_python(root, split)
    else:
        ds = load_folder(root, split, cache_dir=cache_dir)
    if ds.images_u8.shape[1:] != (3, 32, 32):
        raise DataError(f"CIFAR-10 images must be 3x32x32, got {tuple(ds.images_u8.shape[1:])} in {root}")
    return ds
