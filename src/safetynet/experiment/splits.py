"""Which images the experiment attacks: the detector-training and test parts, seeded and class-balanced."""

from __future__ import annotations

import torch

from ..errors import InputError
from .config import ExperimentConfig

__all__ = ["load_splits", "stratified_order"]


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation that interleaves classes, so any prefix is close to balanced."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    rank = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        members = perm[labels[perm] == c]
        rank[members] = torch.arange(len(members))
    # Sort by (rank within class, random tiebreak) -> round-robin over classes.
    key = rank.double() + torch.rand(len(labels), generator=g, dtype=torch.float64) * 0.5
    return torch.argsort(key)


def load_splits(cfg: ExperimentConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Images and labels for detector training and testing, plus a provenance dict."""
    from ..data import load_dataset

    if cfg.dataset == "cifar10-sample":
        data = load_dataset("cifar10-sample", "test")
        order = stratified_order(data.labels, cfg.seed)
        n_train = cfg.n_train or len(data) // 2
        n_test = cfg.n_test or len(data) - n_train
        if n_train + n_test > len(data):
            raise InputError(f"n_train + n_test = {n_train + n_test} exceeds the {len(data)} images of the embedded sample")
        tr, te = order[:n_train], order[n_train:n_train + n_test]
        prov = {"dataset": "CIFAR-10 embedded sample (1,000 test images, JPEG copy)", "train_from": "sample",
                "test_from": "sample (disjoint)", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return data.images[tr], data.labels[tr], data.images[te], data.labels[te], prov
    if cfg.dataset in ("cifar10", "digits"):
        train = load_dataset(cfg.dataset, "train", cfg.data_dir)
        test = load_dataset(cfg.dataset, "test", cfg.data_dir)
        n_train = cfg.n_train or min(2000, len(train))
        n_test = cfg.n_test or min(1000, len(test))
        if n_train > len(train) or n_test > len(test):
            raise InputError(f"n_train={n_train} / n_test={n_test} exceed the data ({len(train)} / {len(test)} images)")
        tr = stratified_order(train.labels, cfg.seed)[:n_train]
        te = stratified_order(test.labels, cfg.seed + 1)[:n_test]
        name = "CIFAR-10 (JPEG copy)" if cfg.dataset == "cifar10" else "scikit-learn digits (8x8)"
        prov = {"dataset": name, "data_dir": str(cfg.data_dir), "train_from": f"{name} train split",
                "test_from": f"{name} test split", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return (train.images_u8[tr].float() / 255, train.labels[tr], test.images_u8[te].float() / 255, test.labels[te], prov)
    if cfg.dataset == "imagenet-val":
        from ..data.imagenet import TEST_IMAGES, TRAIN_IMAGES, imagenet_split

        data = load_dataset("imagenet-val", "all", cfg.data_dir)
        quick = (60, 40) if cfg.quick else (TRAIN_IMAGES, TEST_IMAGES)
        n_train, n_test = cfg.n_train or quick[0], cfg.n_test or quick[1]
        # One folder of validation images, split by image (seeded): ~1/40 of the paper's scale.
        tr, te = imagenet_split(len(data), n_train, n_test, cfg.seed)
        prov = {"dataset": f"ImageNet validation images ({len(data)} in {cfg.data_dir}, 224x224 centre crops)",
                "data_dir": str(cfg.data_dir), "train_from": "ImageNet folder (seeded split by image)",
                "test_from": "ImageNet folder (disjoint images)", "train_indices": tr.tolist(), "test_indices": te.tolist()}
        return data.images_u8[tr].float() / 255, data.labels[tr], data.images_u8[te].float() / 255, data.labels[te], prov
    raise InputError(f"demo dataset must be 'cifar10-sample', 'cifar10', 'digits' or 'imagenet-val', got {cfg.dataset!r}")
