"""Rebuild the CIFAR-10 sample embedded in the package (``src/safetynet/data/assets/cifar10_sample.npz``).

The sample is the first 100 test images of each class, in the loader's order (file-name order
for an image-folder tree, record order for the official binary/python batches), class by class:
1,000 images, uint8 (N, 3, 32, 32), int64 labels, saved as a compressed ``.npz``.

    OMP_NUM_THREADS=1 python scripts/make_cifar10_sample.py ../shared/data/cifar10-jpg

The shipped file was made from the JPEG copy of CIFAR-10 (``../shared/data/cifar10-jpg``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "safetynet" / "data" / "assets" / "cifar10_sample.npz"


def make_sample(cifar_dir: str | Path, per_class: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (10*per_class, 3, 32, 32), labels int64), class-major."""
    from safetynet.data import load_cifar10
    from safetynet.errors import DataError

    ds = load_cifar10(cifar_dir, "test")
    labels = ds.labels.numpy()
    picks = []
    for c in range(len(ds.classes)):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise DataError(f"class {ds.classes[c]!r} has only {len(idx)} test images; the sample needs {per_class}")
        picks.append(idx)
    sel = np.concatenate(picks)
    return ds.images_u8.numpy()[sel].copy(), labels[sel].astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cifar_dir", help="CIFAR-10 folder (binary, python or image-folder form)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz (default: the packaged asset)")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args(argv)

    from safetynet._io import save_npz_atomic

    images, labels = make_sample(args.cifar_dir, args.per_class)
    save_npz_atomic(args.out, compressed=True, images=images, labels=labels)
    size = Path(args.out).stat().st_size
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    sys.stdout.write(f"wrote {args.out}: {len(labels)} images, {size:,} bytes, sha256 {digest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
