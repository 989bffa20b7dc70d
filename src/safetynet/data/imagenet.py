"""ImageNet (ILSVRC2012) validation images from a folder with a ``labels.csv``.

The folder holds the images and ``labels.csv`` with the header ``file,class_index,synset,class_name``
(class indices 0-999 in the standard sorted-synset order, torchvision's and Keras'); an optional
``synset_words.txt`` (one ``nXXXXXXXX name`` line per class, in index order) names all 1,000
classes. ``../shared/data/imagenet-val-1300`` is such a folder (1,300 images, 725 classes).

Every image is brought to the evaluation geometry the ImageNet classifiers were trained for:
the shorter side resized to 256 (bicubic, as TensorFlow's EfficientNet evaluation), then the
centre 224x224 crop, i.e. the central 87.5 % of the shorter side. The shared images are already
227x227 (re-scaled by their source, aspect ratio not kept), so this upsamples 227 -> 256 and
keeps the field of view the models were trained with; cropping 224 of 227 directly would show
98.7 % of it instead (measured on 300 of them with EfficientNet-Lite0: top-1 80.7 % against 82.0 %).

``split``: ``all``, or ``train`` / ``test``, a seeded split by image (:func:`imagenet_split`;
800 / 500 of the 1,300 shared images by default): the detector-training and test parts of the
paper's ImageNet experiment.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, InputError
from .cifar10 import ImageSet

__all__ = ["IMAGENET_CLASSES", "SPLIT_SEED", "TRAIN_IMAGES", "TEST_IMAGES", "imagenet_split", "load_imagenet_folder"]

IMAGENET_CLASSES = 1000
RESIZE, CROP = 256, 224
TRAIN_IMAGES, TEST_IMAGES = 800, 500  # the default split of the 1,300 shared images
SPLIT_SEED = 0  # seed of the split that load_dataset("imagenet-val", "train" | "test") returns
_HEADER = ("file", "class_index")


def _class_names(root: Path, rows: list[dict[str, str]]) -> tuple[str, ...]:
    """Names of the 1,000 classes: synset_words.txt when present, else the names labels.csv gives."""
    words = root / "synset_words.txt"
    if words.is_file():
        lines = [ln.strip() for ln in words.read_text().splitlines() if ln.strip()]
        if len(lines) != IMAGENET_CLASSES:
            raise DataError(f"{words} has {len(lines)} lines; expected one per class ({IMAGENET_CLASSES})")
        return tuple(ln.split(" ", 1)[1] if " " in ln else ln for ln in lines)
    names = [f"class {i}" for i in range(IMAGENET_CLASSES)]
    for r in rows:
        if r.get("class_name"):
            names[int(r["class_index"])] = r["class_name"]
    return tuple(names)


def _read_labels(root: Path) -> list[dict[str, str]]:
    path = root / "labels.csv"
    if not path.is_file():
        raise DataError(f"{path} not found; an ImageNet folder needs labels.csv (file,class_index,...) beside its images")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(_HEADER) <= set(reader.fieldnames):
            raise DataError(f"{path} must have the columns {', '.join(_HEADER)}; found {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} lists no images")
    for i, r in enumerate(rows, start=2):
        try:
            c = int(r["class_index"])
        except (TypeError, ValueError):
            raise DataError(f"{path} line {i}: class_index {r['class_index']!r} is not an integer") from None
        if not 0 <= c < IMAGENET_CLASSES:
            raise DataError(f"{path} line {i}: class_index {c} is outside 0..{IMAGENET_CLASSES - 1}")
    return rows


def _load_image(path: Path) -> np.ndarray:
    """(3, 224, 224) uint8: shorter side resized to 256 (bicubic), centre 224 crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = RESIZE / min(w, h)
            nw, nh = max(CROP, round(w * scale)), max(CROP, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
            left, top = (nw - CROP) // 2, (nh - CROP) // 2
            im = im.crop((left, top, left + CROP, top + CROP))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def imagenet_split(n: int, n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint image indices ``(train, test)`` of sizes ``n_train`` and ``n_test``, from a seeded permutation of ``n``."""
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if n_train + n_test > n:
        raise InputError(f"n_train + n_test = {n_train + n_test} exceeds the {n} images of the folder")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train], perm[n_train:n_train + n_test]


def load_imagenet_folder(root: str | os.PathLike[str], split: str = "all", *, limit: int | None = None) -> ImageSet:
    """The images of an ImageNet folder at 224x224 (uint8), their labels and the 1,000 class names.

    ``split``: ``all`` (in labels.csv order), ``train`` or ``test`` (the seeded 800/500 split of
    :func:`imagenet_split` with :data:`SPLIT_SEED`; needs at least 1,300 images). ``limit``: only
    the first ``limit`` rows of labels.csv (with ``split="all"``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ImageNet folder {root} does not exist; pass the folder holding labels.csv and the images "
                        "(e.g. ../shared/data/imagenet-val-1300)")
    if split not in ("all", "train", "test"):
        raise InputError(f"split must be 'all', 'train' or 'test', got {split!r}")
    if limit is not None and (split != "all" or isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer and needs split='all', got limit={limit!r}, split={split!r}")
    rows = _read_labels(root)
    classes = _class_names(root, rows)
    index = torch.arange(len(rows))
    if split != "all":
        tr, te = imagenet_split(len(rows), TRAIN_IMAGES, TEST_IMAGES, SPLIT_SEED)
        index = tr if split == "train" else te
    elif limit is not None:
        index = index[:limit]
    images = np.stack([_load_image(root / rows[i]["file"]) for i in index.tolist()])  # (N, 3, 224, 224)
    labels = torch.tensor([int(rows[i]["class_index"]) for i in index.tolist()], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images), labels, classes)
