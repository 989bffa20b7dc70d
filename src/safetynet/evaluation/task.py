"""What an evaluation runs on: a :class:`Task` (a classifier, natural fit and test images, a threat model).

CIFAR-10 images (:func:`image_task`) and SceneProof's RGB-D patches
(:func:`safetynet.sceneproof.task.sceneproof_task`) both come as a Task, so the robustness job
and SceneProof's Table 4 run the same engine without knowing where the images come from.

Rules every task follows: the *test* images are the attacked ones (the first ``n`` of the test
split, unshuffled, RobustBench's rule, for image data sets); the *fit* images (disjoint from
them) train the detectors, the surrogates' own detectors and any calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError

__all__ = ["IMAGE_DATASETS", "Task", "image_task", "resolve_classifier"]

IMAGE_DATASETS = ("cifar10-sample", "cifar10", "digits")
#: Default attack budgets per norm for each kind of task.
EPS_DEFAULTS = {
    "digits": {"linf": [0.05, 0.1, 0.2], "l2": [0.5, 1.0, 2.0]},
    "cifar10": {"linf": [2 / 255, 4 / 255, 8 / 255], "l2": [0.25, 0.5, 1.0]},
}


@dataclass
class Task:
    """A classifier with its natural fit/test images and the threat model.

    ``mask`` (0/1, broadcastable to the images) is where attacks may change the input (None:
    everywhere; SceneProof: the depth channel). ``positive_class`` makes the task binary in the
    paper's sense ("true" = that class) and adds F→T / T→F to the rates. ``defences`` are
    ready-made defences that come with the task (SceneProof's calibrated detectors); None lets
    the job fit its own. ``surrogates`` are transfer surrogates that come with it.
    """

    name: str
    model: nn.Module
    model_source: str
    fit_x: torch.Tensor
    fit_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    provenance: dict[str, Any]
    arch: str | None = None
    mask: torch.Tensor | None = None
    positive_class: int | None = None
    defences: dict[str, Any] | None = None
    surrogates: dict[str, nn.Module] = field(default_factory=dict)
    eps: dict[str, list[float]] = field(default_factory=dict)

    @property
    def perturbed(self) -> str:
        return "all pixels" if self.mask is None else "masked elements only (" + self.provenance.get("mask", "mask") + ")"

    def natural_fit(self, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, labels, mask)`` of the fit images the classifier labels correctly: the *natural* examples."""
        from ..attacks.batched import predict

        ok = predict(self.model, self.fit_x, batch_size)[0] == self.fit_y
        return self.fit_x[ok], self.fit_y[ok], ok

    def l2_cap(self) -> float:
        """Largest useful L2 budget: the norm of an all-ones change of every element the attacks may touch."""
        shape = (1, *self.test_x.shape[1:])
        n = self.test_x[0].numel() if self.mask is None else int(torch.broadcast_to(self.mask, shape).sum())
        return float(n) ** 0.5


def resolve_classifier(model: nn.Module | str | None, dataset: str, *, seed: int = 0, out: str | Path | None = None,
                       ) -> tuple[nn.Module, str, str | None]:
    """``(model in eval mode, description, architecture if known)`` from an ``nn.Module``, a name or a folder.

    ``None``: the shipped ``cifar10-resnet20`` for CIFAR-10 tasks; for ``digits`` a tiny SmallCNN
    trained for the run in ``out/classifier`` (resumable; reused when finished).
    """
    from ..models import load_checkpoint, resolve_model

    if isinstance(model, nn.Module):
        return model.eval(), f"{type(model).__name__} (passed as an object)", None
    if model is None and dataset == "digits":
        from .surrogates import train_surrogate

        if out is None:
            raise InputError("training the default digits classifier needs an output folder")
        folder = Path(out) / "classifier"
        net, metrics = train_surrogate("smallcnn", seed, dataset="digits", out=folder, epochs=4)
        return net, f"SmallCNN trained for this run ({folder}, test acc {metrics.get('test_acc', float('nan')):.3f})", "smallcnn"
    name = model if model is not None else "cifar10-resnet20"
    if Path(name).is_dir():
        net, meta = load_checkpoint(name)
        return net.eval(), str(name), meta.get("model", {}).get("arch")
    net, source = resolve_model(name)
    return net.eval(), source, None


def image_task(dataset: str, model: nn.Module | str | None = None, *, n: int = 100, n_fit: int = 600, seed: int = 0,
               data_dir: str | None = None, out: str | Path | None = None) -> Task:
    """A task on an image data set: the first ``n`` test images attacked, ``n_fit`` seeded others to fit on.

    The embedded ``cifar10-sample`` has one split: its first ``n`` images are attacked and
    ``n_fit`` of the rest (seeded) fit the detectors.
    """
    from ..data import load_dataset

    if dataset not in IMAGE_DATASETS:
        raise InputError(f"image dataset must be one of {', '.join(IMAGE_DATASETS)}, got {dataset!r}")
    net, source, arch = resolve_classifier(model, dataset, seed=seed, out=out)
    g = torch.Generator().manual_seed(seed)
    if dataset == "cifar10-sample":
        data = load_dataset("cifar10-sample", "test")
        if n + n_fit > len(data):
            raise InputError(f"n + n_fit = {n + n_fit} exceeds the {len(data)} images of the sample; lower --n or --n-fit")
        rest = torch.arange(n, len(data))
        fit = rest[torch.randperm(len(rest), generator=g)[:n_fit]]
        fit_x, fit_y, test_x, test_y = data.images_u8[fit].float() / 255, data.labels[fit], \
            data.images_u8[:n].float() / 255, data.labels[:n]
        prov = {"fit": "sample images after the first n (seeded subset)", "test": f"first {n} sample images"}
    else:
        train = load_dataset(dataset, "train", data_dir)
        test = load_dataset(dataset, "test", data_dir)
        if n > len(test) or n_fit > len(train):
            raise InputError(f"n={n} / n_fit={n_fit} exceed the data ({len(test)} test / {len(train)} train images)")
        fit = torch.randperm(len(train), generator=g)[:n_fit]
        fit_x, fit_y = train.images_u8[fit].float() / 255, train.labels[fit]
        test_x, test_y = test.images_u8[:n].float() / 255, test.labels[:n]
        prov = {"fit": f"{n_fit} seeded train images", "test": f"first {n} test images"}
    key = "cifar10" if dataset.startswith("cifar10") else dataset
    return Task(name=dataset, model=net, model_source=source, fit_x=fit_x, fit_y=fit_y, test_x=test_x, test_y=test_y,
                provenance=prov, arch=arch, eps={k: list(v) for k, v in EPS_DEFAULTS[key].items()})
