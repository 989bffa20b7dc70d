"""Data loaders. Every loader takes a local path; nothing here downloads.

``load_dataset(name, ...)`` is the one entry point the jobs use:

* ``cifar10``: CIFAR-10 from ``data_dir`` in binary, python or image-folder form;
* ``cifar10-sample``: the 1,000 CIFAR-10 test images embedded in the package (offline default);
* ``digits``: scikit-learn's bundled 8x8 digits;
* ``imagenet-val``: ImageNet validation images from a folder with ``labels.csv`` (``data_dir``),
  at 224x224; split ``train`` / ``test`` is a seeded 800 / 500 split by image, ``all`` every image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..cli_config import setting
from ..errors import InputError
from .cifar10 import CLASSES, ImageSet, load_binary, load_cifar10, load_folder, load_python
from .digits import load_digits

DATASETS = ("cifar10", "cifar10-sample", "digits", "imagenet-val")


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> ImageSet:
    if name == "cifar10":
        if data_dir is None:
            raise InputError("the cifar10 data set needs --data-dir pointing at CIFAR-10 (e.g. ../shared/data/cifar10-jpg)")
        return load_cifar10(data_dir, split)  # type: ignore[arg-type]
    if name == "cifar10-sample":
        from .sample import load_sample

        if split != "test":
            raise InputError("the embedded cifar10-sample holds test images only; use split='test'")
        return load_sample()
    if name == "digits":
        return load_digits(split)  # type: ignore[arg-type]
    if name == "imagenet-val":
        from .imagenet import load_imagenet_folder

        if data_dir is None:
            raise InputError("the imagenet-val data set needs --data-dir pointing at a folder with labels.csv "
                             "(e.g. ../shared/data/imagenet-val-1300)")
        return load_imagenet_folder(data_dir, split)
    raise InputError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


@dataclass
class DataInfoConfig:
    """``safetynet data info``."""

    dataset: str = setting("cifar10-sample", "cifar10-sample | cifar10 | digits | imagenet-val")
    data_dir: str | None = setting(None, "CIFAR-10 folder (binary, python or image-folder form), or an ImageNet "
                                         "folder with labels.csv")
    split: Literal["train", "test", "all"] = setting("test", "split to describe (all: imagenet-val only)")


def dataset_info(cfg: DataInfoConfig) -> dict:
    """Image count, image shape and images per class of one split."""
    ds = load_dataset(cfg.dataset, cfg.split, cfg.data_dir)
    counts = ds.labels.bincount(minlength=len(ds.classes)).tolist()
    return {"dataset": cfg.dataset, "split": cfg.split, "images": len(ds),
            "image_shape": list(ds.images_u8.shape[1:]), "per_class": dict(zip(ds.classes, counts))}


__all__ = ["CLASSES", "DATASETS", "DataInfoConfig", "ImageSet", "dataset_info", "load_binary", "load_cifar10",
           "load_dataset", "load_digits", "load_folder", "load_python"]
