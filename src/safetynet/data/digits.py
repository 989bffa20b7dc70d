"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, UCI) as a tiny data set for fast tests."""

from __future__ import annotations

import numpy as np
import torch

from .cifar10 import ImageSet, Split, _check_split

DIGIT_CLASSES = tuple(str(i) for i in range(10))


def load_digits(split: Split = "train", test_fraction: float = 0.25) -> ImageSet:
    """Images (N, 1, 8, 8); the 0..16 grey levels are scaled to uint8 0..255.

    The split is a fixed stratified one (seed 0), so train and test never overlap.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    _check_split(split)
    bunch = _load()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    idx = np.arange(len(images))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=0, stratify=bunch.target)
    sel = np.sort(tr if split == "train" else te)
    return ImageSet(torch.from_numpy(images[sel].copy()), torch.from_numpy(bunch.target[sel].astype(np.int64)), DIGIT_CLASSES)
