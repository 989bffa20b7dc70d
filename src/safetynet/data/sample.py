"""The CIFAR-10 sample embedded in the package: 1,000 test images for offline demos and tests.

``assets/cifar10_sample.npz`` holds the first 100 test images of each class of the JPEG copy of
CIFAR-10 (file-name order, class by class), uint8 (1000, 3, 32, 32) and int64 labels. Rebuild it
with ``python scripts/make_cifar10_sample.py ../shared/data/cifar10-jpg``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from ..errors import DataError
from .cifar10 import CLASSES, ImageSet

SAMPLE_FILE = "cifar10_sample.npz"
SAMPLE_SIZE = 1000


def load_sample() -> ImageSet:
    """Load the embedded 1,000-image CIFAR-10 test sample (100 per class, in class order)."""
    asset = resources.files("safetynet.data").joinpath("assets", SAMPLE_FILE)
    try:
        with asset.open("rb") as f, np.load(f, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except FileNotFoundError:
        raise DataError(f"the embedded CIFAR-10 sample {asset} is missing; reinstall safetynet "
                        "or rebuild it with scripts/make_cifar10_sample.py") from None
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"the embedded CIFAR-10 sample {asset} is corrupt ({e}); reinstall safetynet") from None
    if (images.dtype != np.uint8 or images.shape != (SAMPLE_SIZE, 3, 32, 32) or labels.dtype != np.int64
            or labels.shape != (SAMPLE_SIZE,) or labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"the embedded CIFAR-10 sample {asset} has unexpected contents "
                        f"({images.dtype} {images.shape}, labels {labels.dtype} {labels.shape}); reinstall safetynet")
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), CLASSES)
